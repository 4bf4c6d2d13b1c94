// Package audio turns audio files into the 16-kHz mono float samples the
// speech models take. Parsers treat input as hostile: sizes are checked
// against the data and the limits before anything is allocated.
package audio
