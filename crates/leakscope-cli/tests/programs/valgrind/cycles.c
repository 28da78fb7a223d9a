/* Lost structures whose leaders Valgrind picks by address: a lone cycle, two
 * cycles linked one to the other, a cycle with a tail, a self-pointer, a
 * doubly linked list and a tree. The blocks are allocated in address order
 * (a fresh heap, no frees), as under Valgrind's allocator. */
#include <stdlib.h>
#include <unistd.h>

struct n { struct n *a, *b; long pad[2]; };

static struct n *mk(void) { struct n *p = calloc(1, sizeof *p); return p; }

__attribute__((noinline)) void lose_cycle(void) {
    struct n *x = mk(), *y = mk();
    x->a = y; y->a = x;
}

/* Cycle 2 is allocated first (lower addresses); cycle 1 points into it:
 * one leader (cycle 1's first block), where leaders taken in address order
 * without merging would be two. */
__attribute__((noinline)) void lose_linked_cycles(void) {
    struct n *c2a = mk(), *c2b = mk();
    c2a->a = c2b; c2b->a = c2a;
    struct n *c1a = mk(), *c1b = mk();
    c1a->a = c1b; c1b->a = c1a;
    c1b->b = c2a;
}

/* A tail block (allocated last) points into a cycle: two leaders, as
 * Valgrind counts them (the cycle's first block, then the tail). */
__attribute__((noinline)) void lose_cycle_with_tail(void) {
    struct n *x = mk(), *y = mk(), *tail = mk();
    x->a = y; y->a = x; tail->a = y;
}

__attribute__((noinline)) void lose_self(void) {
    struct n *s = mk();
    s->a = s;
}

__attribute__((noinline)) void lose_list(void) {
    struct n *head = NULL, *prev = NULL;
    for (int i = 0; i < 10; i++) {
        struct n *e = mk();
        e->b = prev;
        if (prev) prev->a = e; else head = e;
        prev = e;
    }
    (void)head;
}

static struct n *tree(int depth) {
    struct n *t = mk();
    if (depth > 0) { t->a = tree(depth - 1); t->b = tree(depth - 1); }
    return t;
}

__attribute__((noinline)) void lose_tree(void) { tree(4); }

__attribute__((noinline)) void scrub_stack(void) {
    volatile char buf[16384];
    for (unsigned i = 0; i < sizeof buf; i++) buf[i] = 0;
}

int main(void) {
    lose_cycle();
    lose_linked_cycles();
    lose_linked_cycles();
    lose_cycle_with_tail();
    lose_self();
    lose_list();
    lose_tree();
    scrub_stack();
    write(1, "cycles\n", 7);
    return 0;
}
