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

int main() {
    build();
    write(1, "classes\n", 8);
    return 0;
}
