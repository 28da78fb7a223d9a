/* dlopen, a leak from the library, dlclose: the library's blocks outlive
 * it (one held by the program, one by nobody once the library is gone). */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

void *g_from_plugin;

int main(int argc, char **argv) {
    if (argc < 2) return 9;
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) { fprintf(stderr, "%s\n", dlerror()); return 9; }
    void *(*make)(void) = (void *(*)(void))dlsym(h, "plugin_make");
    g_from_plugin = make();
    dlclose(h);
    write(1, "dlopen\n", 7);
    return 0;
}
