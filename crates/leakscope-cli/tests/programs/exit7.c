/* Built statically by the test: LD_PRELOAD cannot reach it. */
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    char *p = malloc(100);
    puts("static");
    return p ? 7 : 1;
}
