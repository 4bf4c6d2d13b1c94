package audio

import (
	"bytes"
	"encoding/binary"
	"io"
)

// mp3DecoderDelay is the lag, in samples, of an MP3 decoder's output
// behind the encoder's input (the synthesis filter bank's), which the
// delay and padding an encoder records do not count.
const mp3DecoderDelay = 529

// mp3Gapless reads the tag frame encoders write first in an MP3 stream
// (Xing or Info, with LAME's extension: "LAME", "Lavc", …) and returns
// how many decoded samples per channel are not the encoder's input: at the
// start the tag frame itself (a frame of silence to a decoder that does
// not know it), the encoder's delay and the decoder's; at the end the
// encoder's padding less the decoder's delay. Without a tag frame both
// are 0. The reader is left where it was.
func mp3Gapless(r io.ReadSeeker) (start, end int) {
	pos, err := r.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, 0
	}
	defer r.Seek(pos, io.SeekStart)
	head := make([]byte, 64<<10)
	n, _ := io.ReadFull(r, head)
	head = head[:n]
	// An ID3v2 tag comes first: "ID3", version, flags, a 28-bit size.
	if len(head) >= 10 && string(head[:3]) == "ID3" {
		size := int(head[6]&0x7f)<<21 | int(head[7]&0x7f)<<14 | int(head[8]&0x7f)<<7 | int(head[9]&0x7f)
		skip := 10 + size
		if head[5]&0x10 != 0 { // a footer
			skip += 10
		}
		if skip >= len(head) {
			return 0, 0
		}
		head = head[skip:]
	}
	if len(head) < 4 || head[0] != 0xff || head[1]&0xe0 != 0xe0 {
		return 0, 0
	}
	version := head[1] >> 3 & 3 // 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
	layer := head[1] >> 1 & 3   // 1: layer III
	if version == 1 || layer != 1 {
		return 0, 0
	}
	mono := head[3]>>6 == 3
	// The tag sits where the first frame's main data would, after the side
	// information (and the CRC when there is one).
	side, perFrame := 32, 1152
	switch {
	case version == 3 && mono:
		side = 17
	case version != 3 && mono:
		side, perFrame = 9, 576
	case version != 3:
		side, perFrame = 17, 576
	}
	off := 4 + side
	if head[1]&1 == 0 {
		off += 2
	}
	if len(head) < off+8 {
		return 0, 0
	}
	if tag := string(head[off : off+4]); tag != "Xing" && tag != "Info" {
		return 0, 0
	}
	start = perFrame
	flags := binary.BigEndian.Uint32(head[off+4:])
	lame := off + 8
	for bit, size := range []int{4, 4, 100, 4} { // frames, bytes, table of contents, quality
		if flags&(1<<bit) != 0 {
			lame += size
		}
	}
	// LAME's extension: a 9-byte encoder name, then at byte 21 the delay
	// and the padding, 12 bits each.
	if len(head) < lame+24 || bytes.IndexFunc(head[lame:lame+4], func(r rune) bool { return r < 'A' || r > 'z' }) >= 0 {
		return start, 0
	}
	b := head[lame+21:]
	delay, padding := int(b[0])<<4|int(b[1])>>4, int(b[1]&0xf)<<8|int(b[2])
	return start + delay + mp3DecoderDelay, max(padding-mp3DecoderDelay, 0)
}
