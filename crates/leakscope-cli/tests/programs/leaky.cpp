// Planted leaks for `leakscope run` against Valgrind, in C++: globals whose
// destructors run at exit (so nothing of theirs is left), a raw global
// pointer that keeps its object (still reachable), lost objects and the
// objects only they point to, and churn through the standard containers.
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>
#include <unistd.h>

struct Session { std::string user; std::vector<int> history; Session *peer = nullptr; };

std::map<int, std::string> g_registry;      // still reachable
std::vector<Session *> g_sessions;          // its buffer is freed at exit, the sessions are lost
Session *g_current_session = nullptr;       // still reachable: a raw pointer, no destructor

__attribute__((noinline)) void keep_current_session() {
    g_current_session = new Session;
    g_current_session->user = std::string(300, 'c');
    g_current_session->history.resize(40);
}

__attribute__((noinline)) void register_users() {
    for (int i = 0; i < 5; i++) g_registry[i] = std::string(100 + i, 'u');
}

__attribute__((noinline)) void open_sessions() {
    for (int i = 0; i < 3; i++) {
        auto *s = new Session;
        s->history.resize(20 + i);
        g_sessions.push_back(s);
    }
}

__attribute__((noinline)) void lose_sessions() {
    auto *a = new Session;      // definitely lost
    a->history.resize(50);      // indirectly lost (only a points to it)
    a->peer = new Session;      // indirectly lost
    a->peer->user = std::string(200, 'p');  // indirectly lost
    a = nullptr;
    int *raw = new int[300];    // definitely lost
    raw[0] = 1;
    raw = nullptr;
}

__attribute__((noinline)) void churn() {
    for (int i = 0; i < 5000; i++) {
        std::vector<std::string> v(10, std::string(40 + i % 64, 'x'));
        auto u = std::make_unique<std::map<int, int>>();
        (*u)[i] = i;
    }
}

__attribute__((noinline)) void scrub_stack() {
    volatile char buf[16384];
    memset((char *)buf, 0, sizeof buf);
}

int main() {
    register_users();
    keep_current_session();
    open_sessions();
    lose_sessions();
    churn();
    scrub_stack();
    write(1, "done\n", 5);
    return 0;
}
