package vision

// Fit returns the image scaled down by the smallest whole factor k that
// brings both sides to at most maxSide, or m itself when it already fits.
// Each pixel of the result averages a k × k block of m (fewer pixels at the
// right and bottom edges), which keeps fine detail better than sampling. The
// result has its own Hash; Format and Orientation are kept.
func (m *Image) Fit(maxSide int) *Image {
	if maxSide <= 0 || (m.Width <= maxSide && m.Height <= maxSide) {
		return m
	}
	k := max((m.Width+maxSide-1)/maxSide, (m.Height+maxSide-1)/maxSide)
	w, h := (m.Width+k-1)/k, (m.Height+k-1)/k
	out := make([]byte, w*h*3)
	sums := make([]uint32, w*3)
	counts := make([]uint32, w)
	for by := range h {
		clear(sums)
		clear(counts)
		for y := by * k; y < min((by+1)*k, m.Height); y++ {
			row := m.RGB[y*m.Width*3 : (y+1)*m.Width*3]
			for x := range m.Width {
				bx := x / k
				sums[bx*3] += uint32(row[x*3])
				sums[bx*3+1] += uint32(row[x*3+1])
				sums[bx*3+2] += uint32(row[x*3+2])
				counts[bx]++
			}
		}
		dst := out[by*w*3 : (by+1)*w*3]
		for bx := range w {
			n := counts[bx]
			for c := range 3 {
				dst[bx*3+c] = uint8((sums[bx*3+c] + n/2) / n)
			}
		}
	}
	return &Image{Width: w, Height: h, RGB: out, Format: m.Format, Orientation: m.Orientation, Hash: HashRGB(w, h, out)}
}
