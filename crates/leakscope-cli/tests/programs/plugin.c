/* A library for stress.c to dlopen: allocates when loaded and when called. */
#include <stdlib.h>
#include <string.h>

static char *loaded_note;

__attribute__((constructor)) static void plugin_init(void) {
    loaded_note = malloc(128);
    strcpy(loaded_note, "loaded");
}

__attribute__((destructor)) static void plugin_fini(void) {
    free(loaded_note);
}

char *plugin_make(int n) {
    char *s = malloc((size_t)n + 1);
    memset(s, 'x', (size_t)n);
    s[n] = 0;
    return s;
}
