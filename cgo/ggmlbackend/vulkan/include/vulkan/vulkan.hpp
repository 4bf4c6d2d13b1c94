// Found before the system's <vulkan/vulkan.hpp> when ggml-vulkan.cpp is
// compiled (its folder comes first on the include path), so that it is
// read exactly where ggml includes the header, after ggml's dispatcher
// set-up. ggml-vulkan builds a
// vk::LayerSettingsCreateInfoEXT for its validation layer; Vulkan headers
// older than 1.3.261 (Debian 12 has 1.3.239) lack VK_EXT_layer_settings.
// Here the structures that extension defines are declared when the headers
// lack them. ggml only enables the extension (and so only lets a driver
// read the structure) when the instance offers it; otherwise the chained
// structure is one a loader skips by its unknown sType.
#pragma once
#include_next <vulkan/vulkan.hpp>

#ifndef VK_EXT_layer_settings
#define VK_EXT_layer_settings 1
namespace vk {
enum class LayerSettingTypeEXT : int32_t {
    eBool32 = 0,
    eInt32 = 1,
    eInt64 = 2,
    eUint32 = 3,
    eUint64 = 4,
    eFloat32 = 5,
    eFloat64 = 6,
    eString = 7,
};

struct LayerSettingEXT {
    const char *pLayerName;
    const char *pSettingName;
    LayerSettingTypeEXT type;
    uint32_t valueCount;
    const void *pValues;
};

struct LayerSettingsCreateInfoEXT {
    // VK_STRUCTURE_TYPE_LAYER_SETTINGS_CREATE_INFO_EXT
    VkStructureType sType = static_cast<VkStructureType>(1000496000);
    const void *pNext = nullptr;
    uint32_t settingCount = 0;
    const LayerSettingEXT *pSettings = nullptr;

    explicit LayerSettingsCreateInfoEXT(const std::vector<LayerSettingEXT> &settings)
        : settingCount(static_cast<uint32_t>(settings.size())), pSettings(settings.data()) {}
};
} // namespace vk
#endif
