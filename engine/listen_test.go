package engine

import (
	"context"
	"io"
	"path/filepath"
	"testing"

	"github.com/owlengine/owl/models/testmodel"
)

// lossySource yields silence and claims to lose audio on some reads.
type lossySource struct {
	reads, dropped, overflows int64
}

func (s *lossySource) Read(ctx context.Context) ([]float32, error) {
	if s.reads == 30 {
		return nil, io.EOF
	}
	s.reads++
	if s.reads == 5 || s.reads == 20 {
		s.dropped += 160
		s.overflows++
	}
	return make([]float32, 1600), nil
}
func (s *lossySource) Dropped() int64   { return s.dropped }
func (s *lossySource) Overflows() int64 { return s.overflows }
func (s *lossySource) Close() error     { return nil }

// Lost audio is reported while listening, not only at the end.
func TestListenReportsDrops(t *testing.T) {
	model := filepath.Join(t.TempDir(), "micro.bin")
	if err := testmodel.WriteWhisperFile(model, testmodel.WhisperMicro(testmodel.VocabEnglish, 0)); err != nil {
		t.Fatal(err)
	}
	e := New(Options{Threads: 1})
	defer e.Close()
	src := &lossySource{}
	var drops []ListenEvent
	st, err := e.Listen(context.Background(), ListenRequest{Model: model, Source: src}, func(ev ListenEvent) error {
		if ev.Type == EventDropped {
			drops = append(drops, ev)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(drops) == 0 || drops[0].Dropped != 160 || drops[0].Overflows != 1 {
		t.Fatalf("drop events %+v", drops)
	}
	if last := drops[len(drops)-1]; last.Dropped != 320 || last.Overflows != 2 {
		t.Fatalf("last drop event %+v", last)
	}
	if st.Dropped != 320 || st.Overflows != 2 {
		t.Fatalf("stats %+v", st)
	}
}
