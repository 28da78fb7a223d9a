/* Memory of known shape for `leakscope run --memory`: 4 threads each
 * allocate 8 MiB of 4 KiB blocks (touched), free every other one (holes the
 * allocator keeps), and exit; the kept blocks stay live until exit. An
 * anonymous mapping of 8 MiB is touched too (memory outside the heap). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define THREADS 4
#define BLOCKS 2048
#define SIZE 4096

static void *kept[THREADS][BLOCKS / 2];

static void *work(void *arg) {
    long t = (long)arg;
    void *all[BLOCKS];
    for (int i = 0; i < BLOCKS; i++) {
        all[i] = malloc(SIZE);
        memset(all[i], 0x5a, SIZE);
    }
    for (int i = 0; i < BLOCKS; i++) {
        if (i % 2)
            free(all[i]);
        else
            kept[t][i / 2] = all[i];
    }
    return NULL;
}

int main(void) {
    pthread_t threads[THREADS];
    for (long t = 0; t < THREADS; t++)
        pthread_create(&threads[t], NULL, work, (void *)t);
    for (int t = 0; t < THREADS; t++)
        pthread_join(threads[t], NULL);
    size_t len = 8 << 20;
    char *anon = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (anon == MAP_FAILED)
        return 1;
    memset(anon, 1, len);
    return 0;
}
