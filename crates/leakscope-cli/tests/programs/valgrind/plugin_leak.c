/* A library loaded and unloaded by dlopen_leak.c: it leaks one block
 * (lost once its data segment is gone) and hands one to the program. */
#include <stdlib.h>

static void *held_by_library;

__attribute__((noinline)) void *plugin_make(void) {
    held_by_library = malloc(111);
    return malloc(222);
}
