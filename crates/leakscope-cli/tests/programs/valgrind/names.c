/* C functions whose names look like mangled C++ types. */
#include <stdlib.h>
#include <unistd.h>

void *g_kept[4];

__attribute__((noinline)) void *f(void) { return malloc(11); }
__attribute__((noinline)) void *d(void) { return malloc(12); }
__attribute__((noinline)) void *i(void) { return malloc(13); }
__attribute__((noinline)) void *x(void) { return malloc(14); }

int main(void) {
    g_kept[0] = f();
    g_kept[1] = d();
    g_kept[2] = i();
    g_kept[3] = x();
    write(1, "names\n", 6);
    return 0;
}
