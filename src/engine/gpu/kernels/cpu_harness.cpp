// Runs top_k.cu on the CPU for a test (engine::gpu::top_k_kernel's tests):
// each CUDA thread a pthread, __syncthreads a barrier, __shared__ a static
// shared by the block's threads, blocks one after another. Reads the scores
// and mask from argv[1], writes pass 2's pairs to argv[2].
// Input: i32 nq, n, k, threads, chunk; f32 scores[nq * n]; u8 masked[n].
// Output: per query k pairs (f32 score, i32 id).
#include <stdio.h>
#include <stdlib.h>
#include "cpu_shim.h"

#include "top_k.cu"

struct Launch {
    int which; // 1: top_k_positions, 2: top_k_pairs
    const float *scores; const int *ids; long long ld; int n; const unsigned char *masked;
    int k; int chunk; float *out_s; int *out_id;
};
struct ThreadArg { const Launch *launch; unsigned t; };

static void *run_thread(void *p) {
    ThreadArg *a = (ThreadArg *)p;
    threadIdx = {a->t, 0, 0};
    const Launch *l = a->launch;
    if (l->which == 1) top_k_positions(l->scores, l->ld, l->n, l->masked, l->k, l->chunk, l->out_s, l->out_id);
    else top_k_pairs(l->scores, l->ids, l->ld, l->n, l->k, l->out_s, l->out_id);
    return 0;
}

static void launch(const Launch &l, unsigned grid_x, unsigned grid_y, unsigned threads) {
    gridDim = {grid_x, grid_y, 1};
    blockDim = {threads, 1, 1};
    for (unsigned y = 0; y < grid_y; y++) {
        for (unsigned x = 0; x < grid_x; x++) {
            blockIdx = {x, y, 0};
            pthread_barrier_init(&block_barrier, 0, threads);
            std::vector<pthread_t> handles(threads);
            std::vector<ThreadArg> args(threads);
            for (unsigned t = 0; t < threads; t++) {
                args[t] = {&l, t};
                pthread_create(&handles[t], 0, run_thread, &args[t]);
            }
            for (unsigned t = 0; t < threads; t++) pthread_join(handles[t], 0);
            pthread_barrier_destroy(&block_barrier);
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    FILE *in = fopen(argv[1], "rb");
    int head[5];
    if (!in || fread(head, 4, 5, in) != 5) return 3;
    int nq = head[0], n = head[1], k = head[2], threads = head[3], chunk = head[4];
    std::vector<float> scores((size_t)nq * n);
    std::vector<unsigned char> masked(n);
    if (fread(scores.data(), 4, scores.size(), in) != scores.size()) return 4;
    if (fread(masked.data(), 1, n, in) != (size_t)n) return 5;
    fclose(in);
    int blocks = (n + chunk - 1) / chunk;
    std::vector<float> mid_s((size_t)nq * blocks * k);
    std::vector<int> mid_id((size_t)nq * blocks * k);
    launch({1, scores.data(), 0, n, n, masked.data(), k, chunk, mid_s.data(), mid_id.data()}, blocks, nq, threads);
    std::vector<float> out_s((size_t)nq * k);
    std::vector<int> out_id((size_t)nq * k);
    launch({2, mid_s.data(), mid_id.data(), (long long)blocks * k, blocks * k, 0, k, 0, out_s.data(), out_id.data()},
           1, nq, threads);
    FILE *out = fopen(argv[2], "wb");
    for (size_t i = 0; i < out_s.size(); i++) {
        fwrite(&out_s[i], 4, 1, out);
        fwrite(&out_id[i], 4, 1, out);
    }
    fclose(out);
    return 0;
}
