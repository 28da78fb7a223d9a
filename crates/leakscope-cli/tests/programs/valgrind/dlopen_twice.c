/* A library unloaded, then another loaded (the loader reuses the
 * addresses): the first library's frames must not take the second's names. */
#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>

void *g_first, *g_second;

static void *call(const char *path, const char *name, int close) {
    void *h = dlopen(path, RTLD_NOW);
    if (!h) { fprintf(stderr, "%s\n", dlerror()); _exit(9); }
    void *p = ((void *(*)(void))dlsym(h, name))();
    if (close) dlclose(h);
    return p;
}

int main(int argc, char **argv) {
    if (argc < 3) return 9;
    g_first = call(argv[1], "plugin_make", 1);
    g_second = call(argv[2], "other_make", 0);
    write(1, "dlopen twice\n", 13);
    return 0;
}
