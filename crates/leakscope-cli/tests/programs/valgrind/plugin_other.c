/* Loaded by dlopen_twice.c after plugin_leak.so was unloaded, likely at
 * the same addresses. */
#include <stdlib.h>

__attribute__((noinline)) void *other_make(void) {
    return malloc(88);
}
