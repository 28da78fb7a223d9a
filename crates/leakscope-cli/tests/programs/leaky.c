/* Planted leaks for `leakscope run` against Valgrind: still reachable (held
 * by globals), definitely lost, indirectly lost, and churn that is freed. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct node { struct node *next; char payload[40]; };

/* still reachable: held by a global */
char *g_config_cache[4];
struct node *g_list;

__attribute__((noinline)) void keep_config(void) {
    for (int i = 0; i < 4; i++) g_config_cache[i] = malloc(1000 + i);
}

__attribute__((noinline)) void keep_list(void) {
    for (int i = 0; i < 3; i++) { struct node *n = malloc(sizeof *n); n->next = g_list; g_list = n; }
}

/* definitely lost: the only pointer is dropped; indirectly lost: blocks reachable only from it */
__attribute__((noinline)) void lose_a_tree(void) {
    struct node *root = malloc(sizeof *root);
    root->next = malloc(sizeof *root);
    root->next->next = malloc(sizeof *root);
    root->next->next->next = NULL;
    memset(root->payload, 1, sizeof root->payload);
    root = NULL;
}

__attribute__((noinline)) void lose_plain(void) {
    char *p = malloc(777);
    p[0] = 1;
    p = NULL;
    void *q = calloc(10, 33);
    (void)q;
}

__attribute__((noinline)) void churn(void) {
    for (int i = 0; i < 10000; i++) {
        void *p = malloc(16 + i % 512);
        p = realloc(p, 32 + i % 1024);
        free(p);
    }
    void *a; if (posix_memalign(&a, 64, 100) == 0) free(a);
    free(aligned_alloc(128, 256));
}

__attribute__((noinline)) void scrub_stack(void) {
    volatile char buf[16384];
    memset((char *)buf, 0, sizeof buf);
}

int main(void) {
    keep_config();
    keep_list();
    lose_a_tree();
    lose_plain();
    churn();
    scrub_stack();
    write(1, "done\n", 5);
    return 3;
}
