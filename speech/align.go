package speech

import (
	"math"
	"slices"
	"strings"
	"time"

	"github.com/owlengine/owl/bindings/ggml"
)

// alignmentHead is a (decoder layer, head) whose cross-attention follows
// the audio closely.
type alignmentHead struct{ layer, head int }

// alignmentPresets are the heads found for OpenAI's released models, by
// name; they apply when the model's shape is that model's.
var alignmentPresets = map[string][]alignmentHead{
	"tiny.en":        {{1, 0}, {2, 0}, {2, 5}, {3, 0}, {3, 1}, {3, 2}, {3, 3}, {3, 4}},
	"tiny":           {{2, 2}, {3, 0}, {3, 2}, {3, 3}, {3, 4}, {3, 5}},
	"base.en":        {{3, 3}, {4, 7}, {5, 1}, {5, 5}, {5, 7}},
	"base":           {{3, 1}, {4, 2}, {4, 3}, {4, 7}, {5, 1}, {5, 2}, {5, 4}, {5, 6}},
	"small.en":       {{6, 6}, {7, 0}, {7, 3}, {7, 8}, {8, 2}, {8, 5}, {8, 7}, {9, 0}, {9, 4}, {9, 8}, {9, 10}, {10, 0}, {10, 1}, {10, 2}, {10, 3}, {10, 6}, {10, 11}, {11, 2}, {11, 4}},
	"small":          {{5, 3}, {5, 9}, {8, 0}, {8, 4}, {8, 7}, {8, 8}, {9, 0}, {9, 7}, {9, 9}, {10, 5}},
	"medium.en":      {{11, 4}, {14, 1}, {14, 12}, {14, 14}, {15, 4}, {16, 0}, {16, 4}, {16, 9}, {17, 12}, {17, 14}, {18, 7}, {18, 10}, {18, 15}, {20, 0}, {20, 3}, {20, 9}, {20, 14}, {21, 12}},
	"medium":         {{13, 15}, {15, 4}, {15, 15}, {16, 1}, {20, 0}, {23, 4}},
	"large-v3":       {{7, 0}, {10, 17}, {12, 18}, {13, 12}, {16, 1}, {17, 14}, {19, 11}, {21, 4}, {24, 1}, {25, 6}},
	"large-v3-turbo": {{2, 4}, {2, 11}, {3, 3}, {3, 6}, {3, 11}, {3, 14}},
}

// alignmentHeads returns the model's preset heads, or every head of the
// second half of the decoder layers (large v1 and v2 share a shape, so they
// get these too).
func (m *Model) alignmentHeads() []alignmentHead {
	name := m.hp.SizeName()
	if !m.hp.Multilingual() {
		name += ".en"
	}
	if heads, ok := alignmentPresets[name]; ok {
		valid := true
		for _, h := range heads {
			valid = valid && h.layer < m.hp.NTextLayer && h.head < m.hp.NTextHead
		}
		if valid {
			return heads
		}
	}
	var heads []alignmentHead
	for l := m.hp.NTextLayer / 2; l < m.hp.NTextLayer; l++ {
		for h := range m.hp.NTextHead {
			heads = append(heads, alignmentHead{l, h})
		}
	}
	return heads
}

const (
	alignMedianWidth = 7
	framesPerSecond  = 50 // encoder positions per second
)

// align times the text tokens and words of a window's segments by dynamic
// time warping over the alignment heads' cross-attention, as OpenAI's
// word_timestamps does.
func (m *Model) align(st *state, lang int, o Options, segs []Segment, offset float64, segFrames int) error {
	var text []Token
	for _, s := range segs {
		for _, t := range s.Tokens {
			if m.vocab.IsText(t.ID) {
				text = append(text, t)
			}
		}
	}
	if len(text) == 0 {
		return nil
	}
	sp := m.vocab.Special()
	o.NoTimestamps = false
	sot := m.sotFor(max(lang, 0), o)
	tokens := append(slices.Clone(sot), int32(sp.NoTimestamps))
	for _, t := range text {
		tokens = append(tokens, int32(t.ID))
	}
	tokens = append(tokens, int32(sp.EOT))
	if len(tokens) > m.hp.NTextCtx {
		return nil // cannot happen with the decoder's own limits
	}

	// One pass over the whole sequence, keeping the cross-attention weights.
	heads := m.alignmentHeads()
	g, done := m.graph(st.priority)
	defer done()
	st.n = 0
	var weights []ggml.Tensor
	m.buildDecoder(g, st, tokens, 0, 1, []int{0}, &weights)
	if err := g.Err(); err != nil {
		return err
	}
	var need []ggml.Tensor
	for _, h := range heads {
		need = append(need, weights[h.layer])
	}
	if err := g.Compute(need...); err != nil {
		return err
	}
	nPos := st.audioCtx
	frames := min(nPos, (segFrames+framesPerPos-1)/framesPerPos)
	rows := len(text) + 1 // the no-timestamps row, then the text tokens
	first := len(sot)
	matrix := make([][]float64, rows)
	for r := range matrix {
		matrix[r] = make([]float64, frames)
	}
	perLayer := map[int][]float32{}
	for _, h := range heads {
		w, ok := perLayer[h.layer]
		if !ok {
			w = weights[h.layer].Floats()
			perLayer[h.layer] = w
		}
		// w is [positions, tokens, heads]: element (p, t, h) at p + nPos*(t + n*h).
		n := len(tokens)
		hw := make([][]float64, rows)
		for r := range hw {
			hw[r] = make([]float64, frames)
			for f := range frames {
				hw[r][f] = float64(w[f+nPos*(first+r+n*h.head)])
			}
		}
		normalizeColumns(hw)
		for r := range hw {
			row := medianFilter(hw[r], alignMedianWidth)
			for f, v := range row {
				matrix[r][f] += v / float64(len(heads))
			}
		}
	}
	path := dtw(matrix)
	// The time each row is first reached: row r (query at the token before
	// text token r) looks at where text token r is spoken.
	start := make([]float64, rows+1)
	seen := make([]bool, rows)
	for _, p := range path {
		if !seen[p[0]] {
			seen[p[0]] = true
			start[p[0]] = float64(p[1]) / framesPerSecond
		}
	}
	start[rows] = float64(frames) / framesPerSecond
	at := func(sec float64) time.Duration {
		return time.Duration(math.Round((offset + sec) * float64(time.Second)))
	}
	k := 0
	for si := range segs {
		var words []Word
		var cur *Word
		var probs []float32
		flush := func() {
			if cur != nil {
				sum := float32(0)
				for _, p := range probs {
					sum += p
				}
				cur.Prob = sum / float32(len(probs))
				words = append(words, *cur)
			}
		}
		for ti := range segs[si].Tokens {
			tok := &segs[si].Tokens[ti]
			if !m.vocab.IsText(tok.ID) {
				continue
			}
			tok.Start, tok.End = at(start[k]), at(start[k+1])
			piece := string(m.vocab.Bytes(tok.ID))
			if cur == nil || strings.HasPrefix(piece, " ") {
				flush()
				cur = &Word{Text: piece, Start: tok.Start, End: tok.End}
				probs = probs[:0]
			} else {
				cur.Text += piece
				cur.End = tok.End
			}
			probs = append(probs, tok.Prob)
			k++
		}
		flush()
		for i := range words {
			words[i].Text = strings.TrimSpace(words[i].Text)
		}
		segs[si].Words = words
	}
	return nil
}

// normalizeColumns makes each column (frame) of m zero-mean and unit
// variance across the rows (tokens).
func normalizeColumns(m [][]float64) {
	if len(m) == 0 {
		return
	}
	for f := range m[0] {
		mean, v := 0.0, 0.0
		for r := range m {
			mean += m[r][f]
		}
		mean /= float64(len(m))
		for r := range m {
			v += (m[r][f] - mean) * (m[r][f] - mean)
		}
		sd := math.Sqrt(v / float64(len(m)))
		if sd == 0 {
			sd = 1
		}
		for r := range m {
			m[r][f] = (m[r][f] - mean) / sd
		}
	}
}

// medianFilter is a running median of odd width w with reflected edges.
func medianFilter(x []float64, w int) []float64 {
	out := make([]float64, len(x))
	half := w / 2
	win := make([]float64, w)
	for i := range x {
		for k := -half; k <= half; k++ {
			j := i + k
			for j < 0 || j >= len(x) { // reflect
				if j < 0 {
					j = -j
				}
				if j >= len(x) {
					j = 2*(len(x)-1) - j
				}
				if len(x) == 1 {
					j = 0
				}
			}
			win[k+half] = x[j]
		}
		slices.Sort(win)
		out[i] = win[half]
	}
	return out
}

// dtw aligns rows (tokens) to columns (frames) along the path of greatest
// total similarity, moving down, right, or diagonally, from the first cell
// to the last. It returns the path's cells, first to last.
func dtw(sim [][]float64) [][2]int {
	n, m := len(sim), len(sim[0])
	inf := math.Inf(1)
	cost := make([][]float64, n+1)
	move := make([][]byte, n+1)
	for i := range cost {
		cost[i] = make([]float64, m+1)
		move[i] = make([]byte, m+1)
		for j := range cost[i] {
			cost[i][j] = inf
		}
	}
	cost[0][0] = 0
	for i := 1; i <= n; i++ {
		for j := 1; j <= m; j++ {
			c, mv := cost[i-1][j-1], byte(0)
			if cost[i-1][j] < c {
				c, mv = cost[i-1][j], 1
			}
			if cost[i][j-1] < c {
				c, mv = cost[i][j-1], 2
			}
			cost[i][j] = c - sim[i-1][j-1]
			move[i][j] = mv
		}
	}
	var path [][2]int
	for i, j := n, m; i > 0 && j > 0; {
		path = append(path, [2]int{i - 1, j - 1})
		switch move[i][j] {
		case 0:
			i, j = i-1, j-1
		case 1:
			i--
		default:
			j--
		}
	}
	slices.Reverse(path)
	return path
}
