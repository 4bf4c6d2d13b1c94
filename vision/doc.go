// Package vision turns image files into the RGB pixels the multimodal
// projectors take, and caches what the projectors make of them.
//
// Decode recognizes JPEG, PNG, GIF (the first frame), WebP, BMP and TIFF by
// their bytes, never by a file name, and refuses HEIC, AVIF, JPEG XL and SVG
// by name. Input is treated as hostile: the encoded size is checked before it
// is read into memory, and the pixel count is read from the header and
// checked before the image is decoded, so a small file that claims to be
// 100000×100000 pixels is refused without allocating its pixels.
//
// Every image comes out as 8-bit RGB, rows top to bottom, as a person would
// see it: the EXIF orientation (JPEG, TIFF, WebP and PNG) is applied,
// transparent pixels are composited over white, CMYK is converted, 16-bit
// samples are rounded to 8 bits, palettes and gray are expanded.
//
// An Image carries a content Hash, the SHA-256 of its dimensions and RGB
// pixels. It is computed from the pixels rather than the file's bytes because
// what a projector computes depends only on the pixels: the same picture
// re-saved with other metadata or compression settings, or as another
// lossless format, hashes the same and is encoded once. EmbeddingCache keeps
// projector outputs keyed by it, bounded in bytes.
package vision
