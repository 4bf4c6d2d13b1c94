#include "owl_espeak.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <espeak-ng/speak_lib.h>

typedef struct {
	short *data;
	size_t n, cap;
	int failed;
} owl_samples;

// owl_current is the buffer of the synthesis under way. espeak-ng has one
// synthesis at a time for the whole process and the Go side holds a lock
// around every call, so one pointer serves (the callback's events do not
// always carry the user data: a chunk without events has none).
static owl_samples *owl_current;

static int owl_collect(short *wav, int count, espeak_EVENT *events) {
	(void)events;
	owl_samples *s = owl_current;
	if (!s || !wav || count <= 0) {
		return 0;
	}
	if (s->n + (size_t)count > s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 1 << 16;
		while (cap < s->n + (size_t)count) {
			cap *= 2;
		}
		short *grown = realloc(s->data, cap * sizeof(short));
		if (!grown) {
			s->failed = 1;
			return 1; // stop
		}
		s->data = grown;
		s->cap = cap;
	}
	memcpy(s->data + s->n, wav, (size_t)count * sizeof(short));
	s->n += (size_t)count;
	return 0;
}

int owl_espeak_init(const char *path) {
	int rate = espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, path, 0);
	if (rate > 0) {
		espeak_SetSynthCallback(owl_collect);
	}
	return rate;
}

int owl_espeak_synth(const char *text, short **out, size_t *n) {
	owl_samples s = {0};
	owl_current = &s;
	espeak_ERROR err = espeak_Synth(text, strlen(text) + 1, 0, POS_CHARACTER, 0,
	                                espeakCHARS_AUTO | espeakPHONEMES | espeakENDPAUSE, NULL, NULL);
	if (err == EE_OK) {
		err = espeak_Synchronize();
	}
	owl_current = NULL;
	if (err != EE_OK || s.failed) {
		free(s.data);
		*out = NULL;
		*n = 0;
		return err != EE_OK ? (int)err : EE_INTERNAL_ERROR;
	}
	*out = s.data;
	*n = s.n;
	return 0;
}

int owl_espeak_set_voice(const char *name) {
	if (espeak_SetVoiceByName(name) == EE_OK) {
		return 0;
	}
	espeak_VOICE spec;
	memset(&spec, 0, sizeof spec);
	spec.languages = name;
	if (espeak_SetVoiceByProperties(&spec) != EE_OK) {
		return -1;
	}
	// Properties match loosely: keep the voice only when one of its
	// languages has the name's first part ("en" of "en-gb").
	espeak_VOICE *v = espeak_GetCurrentVoice();
	size_t want = strcspn(name, "-_");
	for (const char *l = v ? v->languages : NULL; l && *l; l += 1 + strlen(l + 1) + 1) {
		const char *lang = l + 1;
		if (strcspn(lang, "-_") == want && strncasecmp(lang, name, want) == 0) {
			return 0;
		}
	}
	return -1;
}

const char *owl_espeak_phonemes(const char **text) {
	return espeak_TextToPhonemes((const void **)text, espeakCHARS_AUTO, espeakPHONEMES_IPA);
}
