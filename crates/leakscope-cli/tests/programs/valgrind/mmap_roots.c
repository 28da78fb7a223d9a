// Pointers kept only in memory the program mapped itself, which Valgrind
// scans as roots: a 1 MiB arena of its own (two blocks held from it), a
// 256 MiB reservation of which one page was ever touched (a block held
// from that page), and a block held from a page of the arena that the
// program then made unreadable (not scanned, so that block is lost). One
// block is plainly lost. The mappings are placed at hint addresses (not on
// a 64 MiB boundary, where glibc's own heaps are).
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

void *g_unused;

__attribute__((noinline)) static void build(void) {
    void **arena = mmap((void *)0x300000100000, 1 << 20, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *reserved = mmap((void *)0x310000200000, 256 << 20, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (arena == MAP_FAILED || reserved == MAP_FAILED) _exit(3);
    arena[10] = malloc(100);
    arena[20000] = malloc(200);
    ((void **)(reserved + (100 << 20)))[7] = malloc(300);
    // The arena's last page: a pointer, then the page made unreadable.
    arena[(1 << 20) / 8 - 8] = malloc(400);
    mprotect((char *)arena + (1 << 20) - 4096, 4096, PROT_NONE);
    void *lost = malloc(50);
    memset(lost, 1, 50);
    lost = NULL;
}

__attribute__((noinline)) static void scrub_stack(void) {
    volatile char buf[16384];
    for (unsigned i = 0; i < sizeof buf; i++) buf[i] = 0;
}

int main(void) {
    build();
    scrub_stack();
    write(1, "mmap roots\n", 11);
    return 0;
}
