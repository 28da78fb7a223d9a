/* Possibly lost, as Valgrind propagates it: a block reached only through an
 * interior pointer is possibly lost, and so is everything reached only
 * through it, even by pointers to their starts. A block also reached by a
 * start pointer along a definite chain is still reachable. */
#include <stdlib.h>
#include <unistd.h>

struct n { struct n *next; char *data; long pad[2]; };

char *g_inside;          /* interior pointer into `outer` */
struct n *g_definite;    /* start pointer to a reachable block */

__attribute__((noinline)) void build(void) {
    struct n *outer = calloc(1, sizeof *outer);
    struct n *child = calloc(1, sizeof *child);
    struct n *grandchild = calloc(1, sizeof *grandchild);
    outer->next = child;          /* start pointer, but from a possibly lost block */
    child->next = grandchild;
    child->data = malloc(100);
    g_inside = (char *)outer + 8;

    struct n *shared = calloc(1, sizeof *shared);
    g_definite = calloc(1, sizeof *g_definite);
    g_definite->next = shared;    /* definite chain to `shared` */
    grandchild->next = shared;    /* and a possible one: still reachable */

    char *buffer = malloc(64);
    g_definite->data = buffer + 16; /* interior only: possibly lost */
}

__attribute__((noinline)) void scrub_stack(void) {
    volatile char buf[16384];
    for (unsigned i = 0; i < sizeof buf; i++) buf[i] = 0;
}

int main(void) {
    build();
    scrub_stack();
    write(1, "possibly\n", 9);
    return 2;
}
