/* realloc in all directions: grown and held, shrunk and held, realloc of
 * NULL lost, and a list whose nodes moved as they grew. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct node { struct node *next; char *text; };

char *g_grown, *g_shrunk;
struct node *g_list;

__attribute__((noinline)) void move_things(void) {
    g_grown = malloc(10);
    for (int n = 20; n <= 5000; n *= 3) g_grown = realloc(g_grown, n);
    g_shrunk = malloc(9000);
    g_shrunk = realloc(g_shrunk, 100);
    char *lost = realloc(NULL, 50);
    lost[0] = 1;
    for (int i = 0; i < 5; i++) {
        struct node *n = malloc(sizeof *n);
        n->text = malloc(8);
        n->text = realloc(n->text, 64 + i);
        n->next = g_list;
        g_list = n;
    }
    /* Lose the list's tail: indirectly lost behind a definitely lost node. */
    g_list->next->next = NULL;
}

__attribute__((noinline)) void scrub_stack(void) {
    volatile char buf[16384];
    for (unsigned i = 0; i < sizeof buf; i++) buf[i] = 0;
}

int main(void) {
    move_things();
    scrub_stack();
    write(1, "realloc\n", 8);
    return 0;
}
