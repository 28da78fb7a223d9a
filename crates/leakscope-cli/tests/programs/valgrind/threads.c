/* Threads at exit: one still running (blocked, holding a block on its stack
 * and one in a thread-local), others that ran and were joined (glibc keeps
 * their stacks, with their DTVs, in its cache), one that leaked a block. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static __thread void *t_local;
static pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;
static int ready_pipe[2];

static void *blocked(void *arg) {
    (void)arg;
    void *volatile on_stack = malloc(200);
    t_local = malloc(300);
    char c = 1;
    if (write(ready_pipe[1], &c, 1) != 1) _exit(9);
    pthread_mutex_lock(&gate); /* never returns: main holds it */
    return (void *)on_stack;
}

static void *short_lived(void *arg) {
    void *lost = malloc(100 + (long)arg);
    (void)lost;
    return NULL;
}

int main(void) {
    pthread_mutex_lock(&gate);
    if (pipe(ready_pipe) != 0) return 9;
    for (long i = 0; i < 3; i++) {
        pthread_t t;
        pthread_create(&t, NULL, short_lived, (void *)i);
        pthread_join(t, NULL);
    }
    pthread_t b;
    pthread_create(&b, NULL, blocked, NULL);
    char c;
    if (read(ready_pipe[0], &c, 1) != 1) return 9;
    write(1, "threads\n", 8);
    exit(0);
}
