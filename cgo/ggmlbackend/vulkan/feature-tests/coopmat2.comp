#version 450
// Probe: can glslc compile a shader using NV cooperative matrices 2?
#extension GL_KHR_cooperative_matrix : require
#extension GL_NV_cooperative_matrix2 : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
layout(local_size_x = 32) in;
void main() {
    coopmat<float16_t, gl_ScopeWorkgroup, 16, 16, gl_MatrixUseA> m = coopmat<float16_t, gl_ScopeWorkgroup, 16, 16, gl_MatrixUseA>(0.0);
    tensorLayoutNV<2> t = createTensorLayoutNV(2);
}
