/*
 * A plain TCP relay for `spook-lab bench wrap --only speed`: accept on LISTEN_ADDR:LISTEN_PORT,
 * connect each accepted socket to TO_ADDR:TO_PORT, and copy bytes both ways with one thread per
 * direction (blocking read and write, TCP_NODELAY). No encryption, no framing, no recovery: two
 * in a row show what a relay pair costs per byte and per request without any of that. Not a
 * floor for connection set-up: each one opens a TCP connection per hop, its connect blocking the
 * accept loop, where ssh -L multiplexes channels over one.
 *
 *   relay-floor LISTEN_ADDR LISTEN_PORT TO_ADDR TO_PORT      (IPv4; runs until killed)
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

struct leg {
  int from, to;
};

static struct sockaddr_in addr_of(const char *host, const char *port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
  if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
    fprintf(stderr, "relay-floor: %s is not an IPv4 address\n", host);
    exit(2);
  }
  return a;
}

static void *pump(void *p) {
  struct leg *l = p;
  char buf[65536];
  for (;;) {
    ssize_t n = read(l->from, buf, sizeof buf);
    if (n <= 0) break;
    for (ssize_t o = 0; o < n;) {
      ssize_t w = write(l->to, buf + o, (size_t)(n - o));
      if (w <= 0) goto out;
      o += w;
    }
  }
out:
  shutdown(l->to, SHUT_WR);
  shutdown(l->from, SHUT_RD);
  free(l);
  return NULL;
}

/* Both directions of one connection; the sockets close once both threads are done with them. */
struct conn {
  int a, b;
};

static void *serve(void *p) {
  struct conn *c = p;
  struct leg *up = malloc(sizeof *up), *down = malloc(sizeof *down);
  if (!up || !down) abort();
  *up = (struct leg){c->a, c->b};
  *down = (struct leg){c->b, c->a};
  pthread_t t;
  if (pthread_create(&t, NULL, pump, up) != 0) abort();
  pump(down);
  pthread_join(t, NULL);
  close(c->a);
  close(c->b);
  free(c);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: relay-floor LISTEN_ADDR LISTEN_PORT TO_ADDR TO_PORT\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN); /* a write to a reset peer fails that connection, not the relay */
  struct sockaddr_in la = addr_of(argv[1], argv[2]), ta = addr_of(argv[3], argv[4]);
  int one = 1, ls = socket(AF_INET, SOCK_STREAM, 0);
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(ls, (struct sockaddr *)&la, sizeof la) != 0 || listen(ls, 512) != 0) {
    perror("relay-floor: listen");
    return 1;
  }
  for (;;) {
    int a = accept(ls, NULL, NULL);
    if (a < 0) {
      usleep(1000); /* out of descriptors, say: no spinning */
      continue;
    }
    int b = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(b, (struct sockaddr *)&ta, sizeof ta) != 0) {
      close(a);
      close(b);
      continue;
    }
    setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = malloc(sizeof *c);
    if (!c) abort();
    *c = (struct conn){a, b};
    pthread_t t;
    if (pthread_create(&t, NULL, serve, c) != 0) abort();
    pthread_detach(t);
  }
}
