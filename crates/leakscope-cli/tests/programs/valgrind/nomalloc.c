/* A program that never calls malloc: an empty leak summary. */
#include <unistd.h>

int main(void) {
    write(1, "no malloc\n", 10);
    return 4;
}
