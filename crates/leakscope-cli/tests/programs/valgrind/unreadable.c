/* Blocks whose pages are made unreadable: still counted, as reached or not,
 * but their contents cannot be scanned, so what only they hold is lost. */
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

void *g_locked;

__attribute__((noinline)) void lock_blocks(void) {
    /* Held by a global, unreadable: still reachable; the block it holds is
     * definitely lost (its only pointer cannot be read). */
    void **held = NULL;
    if (posix_memalign((void **)&held, 4096, 8192) != 0) _exit(9);
    held[0] = malloc(48);
    g_locked = held;
    mprotect(held, 8192, PROT_NONE);
    /* Nobody holds it: definitely lost, unreadable. */
    void *lost = NULL;
    if (posix_memalign(&lost, 4096, 4096) != 0) _exit(9);
    mprotect(lost, 4096, PROT_NONE);
}

__attribute__((noinline)) void scrub_stack(void) {
    volatile char buf[16384];
    for (unsigned i = 0; i < sizeof buf; i++) buf[i] = 0;
}

int main(void) {
    lock_blocks();
    scrub_stack();
    write(1, "unreadable\n", 11);
    return 0;
}
