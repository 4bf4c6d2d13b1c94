#ifndef OWL_ESPEAK_H
#define OWL_ESPEAK_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// owl_espeak_init starts espeak-ng for synchronous synthesis with the data
// at path (NULL: the compiled-in default) and returns its sample rate, or
// a negative espeak error code.
int owl_espeak_init(const char *path);

// owl_espeak_synth speaks text (UTF-8, NUL-terminated) with the current
// voice and parameters into *out (malloc'd, *n samples; free it), with
// espeak-ng's own command's flags (text, [[phonemes]], a pause at the end).
// It returns 0 or an espeak error code.
int owl_espeak_synth(const char *text, short **out, size_t *n);

// owl_espeak_set_voice selects a voice by name or identifier, else the
// best voice for the name as a language ("en-gb"), as the espeak-ng
// command's -v does. It returns 0, or -1 when none fits.
int owl_espeak_set_voice(const char *name);

// owl_espeak_phonemes phonemizes the clause at *text (UTF-8, IPA) and
// advances *text past it (NULL after the last one). The result lives until
// the next call.
const char *owl_espeak_phonemes(const char **text);

#ifdef __cplusplus
}
#endif

#endif
