// Round trip between two threads pinned to given CPUs, over a pair of eventfds: what a hand-off
// between two of a replica's threads costs when the other thread's CPU is idle (issue 12, stop
// 42: 72-74 us across the two vCPUs of the project's VM, 2.7 us on one).
//
//   gcc -O2 -o /tmp/wake_probe scripts/wake_probe.c -lpthread
//   /tmp/wake_probe CPU_A CPU_B [SPIN_US]
//
// Thread A (on CPU_A) writes to one eventfd and reads the other; thread B (on CPU_B) answers.
// Between round trips A sleeps 50 us (or, with SPIN_US, busy-waits that long, so its own CPU
// stays awake); prints the p50/p90/p99 of 20,000 round trips.
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <time.h>
#include <sys/eventfd.h>
#include <stdint.h>
static int a2b, b2a; static int cpuA, cpuB; static int N = 20000; static int spin_us = 0;
static void pin(int c){ cpu_set_t s; CPU_ZERO(&s); CPU_SET(c,&s); pthread_setaffinity_np(pthread_self(),sizeof s,&s); }
static double now(){ struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec*1e6+t.tv_nsec/1e3; }
static void *b(void*x){ pin(cpuB); uint64_t v; for(int i=0;i<N;i++){ read(a2b,&v,8); write(b2a,&v,8);} return 0; }
int main(int argc,char**argv){ cpuA=atoi(argv[1]); cpuB=atoi(argv[2]); if(argc>3) spin_us=atoi(argv[3]);
 a2b=eventfd(0,0); b2a=eventfd(0,0); pthread_t t; pthread_create(&t,0,b,0); pin(cpuA);
 double *rt = malloc(sizeof(double)*N); uint64_t v=1;
 for(int i=0;i<N;i++){ if(spin_us){ double s=now(); while(now()-s<spin_us); } else usleep(50); double s=now(); write(a2b,&v,8); read(b2a,&v,8); rt[i]=now()-s; }
 pthread_join(t,0);
 int cmp(const void*x,const void*y){ double a=*(double*)x,b=*(double*)y; return a<b?-1:a>b; } qsort(rt,N,sizeof(double),cmp);
 printf("cpus %d->%d: round trip p50 %.1f us p90 %.1f p99 %.1f\n",cpuA,cpuB,rt[N/2],rt[N*9/10],rt[N*99/100]); }
