package speech

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/owlengine/owl/models/testmodel"
)

var benchModels sync.Map // config name → path

func benchModel(b *testing.B, name string, c testmodel.WhisperConfig, fa bool) *Model {
	b.Helper()
	dir := os.TempDir()
	p, ok := benchModels.Load(name)
	if !ok {
		path := filepath.Join(dir, name+".bin")
		if err := testmodel.WriteWhisperFile(path, c); err != nil {
			b.Fatal(err)
		}
		benchModels.Store(name, path)
		p = path
	}
	m, err := Load(context.Background(), p.(string), LoadOptions{Threads: 2, CacheDir: dir, FlashAttn: fa})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

// BenchmarkEncode measures the encoder on one 30-second window.
func BenchmarkEncode(b *testing.B) {
	for _, size := range []struct {
		name string
		c    testmodel.WhisperConfig
	}{{"tiny", testmodel.WhisperTiny(testmodel.VocabEnglish, 1)}, {"base", testmodel.WhisperBase(testmodel.VocabEnglish, 1)}} {
		for _, fa := range []bool{false, true} {
			b.Run(size.name+map[bool]string{false: "/attn=plain", true: "/attn=flash"}[fa], func(b *testing.B) {
				m := benchModel(b, size.name, size.c, fa)
				st, err := m.newState(1)
				if err != nil {
					b.Fatal(err)
				}
				defer st.close()
				mel := LogMel(testAudio(), m.file.MelFilters, m.hp.NMels, 2)
				window := make([]float32, m.hp.NMels*WindowFrames)
				mel.Window(window, 0)
				for b.Loop() {
					if err := m.encode(window, st, nil); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkDecodeStep measures one decoder step (one token) at position 64.
func BenchmarkDecodeStep(b *testing.B) {
	for _, size := range []struct {
		name string
		c    testmodel.WhisperConfig
	}{{"tiny", testmodel.WhisperTiny(testmodel.VocabEnglish, 1)}, {"base", testmodel.WhisperBase(testmodel.VocabEnglish, 1)}} {
		for _, fa := range []bool{false, true} {
			b.Run(size.name+map[bool]string{false: "/attn=plain", true: "/attn=flash"}[fa], func(b *testing.B) {
				m := benchModel(b, size.name, size.c, fa)
				st, err := m.newState(1)
				if err != nil {
					b.Fatal(err)
				}
				defer st.close()
				prompt := make([]int32, 64)
				for i := range prompt {
					prompt[i] = int32(100 + i)
				}
				if _, err := m.decode(st, prompt); err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					st.n = 64
					if _, err := m.decode(st, []int32{7}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkDecodeStepContended is BenchmarkDecodeStep with other programs
// busy on every core (busy loops at normal priority, and then niced, as a
// compile beside a desktop assistant would be).
func BenchmarkDecodeStepContended(b *testing.B) {
	for _, nice := range []string{"0", "19"} {
		b.Run("nice="+nice, func(b *testing.B) {
			m := benchModel(b, "tiny", testmodel.WhisperTiny(testmodel.VocabEnglish, 1), false)
			st, err := m.newState(1)
			if err != nil {
				b.Fatal(err)
			}
			defer st.close()
			prompt := make([]int32, 64)
			if _, err := m.decode(st, prompt); err != nil {
				b.Fatal(err)
			}
			for range runtime.NumCPU() {
				hog := exec.Command("nice", "-n", nice, "sh", "-c", "while :; do :; done")
				if err := hog.Start(); err != nil {
					b.Skip("cannot start a busy program:", err)
				}
				defer func() { hog.Process.Kill(); hog.Wait() }()
			}
			time.Sleep(300 * time.Millisecond) // for the CPU readings to see them
			for b.Loop() {
				st.n = 64
				if _, err := m.decode(st, []int32{7}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
