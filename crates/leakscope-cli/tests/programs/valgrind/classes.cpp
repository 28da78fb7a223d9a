// C++ objects Valgrind's default heuristics judge: std::string members
// (long strings live in their own block), multiple inheritance (a pointer
// to the second base points inside the object) and new[] arrays of objects
// with destructors (the pointer is past the element count).
#include <string>
#include <unistd.h>

struct A { virtual ~A() {} long a = 1; };
struct B { virtual ~B() {} long b = 2; };
struct C : A, B { std::string name = std::string(100, 'c'); };
struct D { ~D() {} long v = 3; };

B *g_second_base;
std::string *g_string;
D *g_array;

__attribute__((noinline)) void build() {
    g_second_base = new C();                  // interior: the B inside a C
    g_string = new std::string(200, 's');     // start pointer to the string
    g_array = new D[10];                      // interior: after the count
}

// Valgrind never counts a word the program did not write (an unused slot
// of a frame, holding what a dead frame left there); leakscope cannot tell,
// so what build() left below main is overwritten before exit's frames use it.
__attribute__((noinline)) void scrub_stack() {
    volatile char buf[16384];
    for (unsigned i = 0; i < sizeof buf; i++) buf[i] = 0;
}

int main() {
    build();
    scrub_stack();
    write(1, "classes\n", 8);
    return 0;
}
