/* Pointers left in main's frame when it returns: the exit handlers run in
 * the memory main's frame used. Valgrind scans only the frames live at
 * exit (and only words the program initialised), so none of these blocks
 * is held: each is definitely lost. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((noinline)) void leave_pointers(void) {
    /* A large frame full of pointers to lost blocks, deep below main. */
    volatile void *slots[512];
    for (int i = 0; i < 512; i++) slots[i] = NULL;
    for (int i = 0; i < 16; i++) slots[i * 31] = malloc(24 + i);
}

int main(void) {
    leave_pointers();
    write(1, "stale\n", 6);
    return 0;
}
