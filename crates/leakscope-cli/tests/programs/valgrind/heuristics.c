// Interior pointers of the shapes Valgrind's leak-check heuristics accept,
// each the only reference to its block, and one of no known shape:
// - stdstring: the old libstdc++ string, held by a pointer to its
//   characters after length, capacity and reference count;
// - length64: a block that starts with the length of the rest, held past it;
// - newarray: an element count, then the elements, held past the count;
// - multipleinheritance: an "object" with a vtable pointer at its start and
//   another at 16 (vtables of function pointers in read-only data), held by
//   a pointer to the second;
// - none: a pointer 40 bytes into a plain 64-byte block (possibly lost
//   whatever the heuristics).
// The stdstring block holds the only pointer to a 24-byte child, which is
// as reachable as its parent.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void first(void) {}
static void second(void) {}
static void third(void) {}
static void fourth(void) {}

// An offset-to-top word, then function pointers, as a C++ vtable.
static void (*const primary_vtable[])(void) = {0, first, second};
static void (*const secondary_vtable[])(void) = {0, third, fourth};

char *g_string_chars;
char *g_length64_rest;
char *g_array_elements;
void **g_second_base;
char *g_inside;

__attribute__((noinline)) static void build(void) {
    uint64_t *s = malloc(3 * 8 + 30 + 1);
    s[0] = 20; // length
    s[1] = 30; // capacity
    s[2] = (uint64_t)(uintptr_t)malloc(24); // refcount word, here a child
    g_string_chars = (char *)&s[3];

    uint64_t *l = malloc(8 + 40);
    l[0] = 40;
    g_length64_rest = (char *)&l[1];

    uint64_t *a = malloc(8 + 5 * 16);
    a[0] = 5;
    g_array_elements = (char *)&a[1];

    void **o = malloc(32);
    memset(o, 0, 32);
    o[0] = (void *)&primary_vtable[1];
    o[2] = (void *)&secondary_vtable[1];
    g_second_base = &o[2];

    char *p = malloc(64);
    memset(p, 'x', 64);
    g_inside = p + 40;
}

// What build() left below main is overwritten before exit's frames use it.
__attribute__((noinline)) static void scrub_stack(void) {
    volatile char buf[16384];
    for (unsigned i = 0; i < sizeof buf; i++) buf[i] = 0;
}

int main(void) {
    build();
    scrub_stack();
    write(1, "heuristics\n", 11);
    return 0;
}
