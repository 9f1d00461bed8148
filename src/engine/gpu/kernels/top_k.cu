// Top-k per query on the device, in two passes over a score matrix (one
// row of `ld` floats per query, as cuBLAS writes it). Pass 1
// (`top_k_positions`): each block takes a chunk of one query's scores and
// keeps its best k positions, skipping masked (deleted) ones. Pass 2
// (`top_k_pairs`): one block per query keeps the best k of pass 1's
// (score, id) pairs. Order: higher score, then smaller id; an id below 0 is
// an empty entry and loses to every real one. Plain C apart from the CUDA
// qualifiers, so that a test compiles it for the CPU (threads as pthreads).
//
// KMAX (the largest k) and THREADS_MAX (the largest block) are set when it
// is compiled; blockDim.x must be a power of two.

#ifndef KMAX
#define KMAX 64
#endif
#ifndef THREADS_MAX
#define THREADS_MAX 256
#endif

#define EMPTY_SCORE (-3.0e38f)

__device__ inline int inf_better(float s, int id, float other_s, int other_id) {
    if (id < 0) return 0;
    if (other_id < 0) return 1;
    return s > other_s || (s == other_s && id < other_id);
}

// One thread's sorted best list (local memory), then k rounds in which the
// block's best head wins (a tree in shared memory) and is written out.
__device__ inline void inf_block_top_k(float *best, int *best_id, int count, int k,
                                       float *out_s, int *out_id) {
    __shared__ float sh_s[THREADS_MAX];
    __shared__ int sh_id[THREADS_MAX];
    __shared__ int sh_t[THREADS_MAX];
    int t = threadIdx.x;
    int head = 0;
    for (int r = 0; r < k; r++) {
        sh_s[t] = head < count ? best[head] : EMPTY_SCORE;
        sh_id[t] = head < count ? best_id[head] : -1;
        sh_t[t] = t;
        __syncthreads();
        for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
            if (t < stride && inf_better(sh_s[t + stride], sh_id[t + stride], sh_s[t], sh_id[t])) {
                sh_s[t] = sh_s[t + stride];
                sh_id[t] = sh_id[t + stride];
                sh_t[t] = sh_t[t + stride];
            }
            __syncthreads();
        }
        int winner = sh_t[0];
        if (t == 0) {
            out_s[r] = sh_s[0];
            out_id[r] = sh_id[0];
        }
        __syncthreads(); // every thread has read the winner before the next round writes
        if (t == winner && head < count) head++;
    }
}

__device__ inline void inf_offer(float *best, int *best_id, int *count, int k, float s, int id) {
    if (*count == k && !inf_better(s, id, best[k - 1], best_id[k - 1])) return;
    int j = *count < k ? (*count)++ : k - 1;
    while (j > 0 && inf_better(s, id, best[j - 1], best_id[j - 1])) {
        best[j] = best[j - 1];
        best_id[j] = best_id[j - 1];
        j--;
    }
    best[j] = s;
    best_id[j] = id;
}

// scores: query q's row at q * ld, n positions; masked: one byte per
// position (non-zero: skip). Output: per query, gridDim.x * k pairs, block b's at b * k.
extern "C" __global__ void top_k_positions(const float *scores, long long ld, int n,
                                           const unsigned char *masked, int k, int chunk,
                                           float *out_s, int *out_id) {
    float best[KMAX];
    int best_id[KMAX];
    int count = 0;
    long long q = blockIdx.y;
    const float *row = scores + q * ld;
    long long begin = (long long)blockIdx.x * chunk;
    long long end = begin + chunk < n ? begin + chunk : n;
    for (long long i = begin + threadIdx.x; i < end; i += blockDim.x) {
        if (masked[i]) continue;
        inf_offer(best, best_id, &count, k, row[i], (int)i);
    }
    long long out = (q * gridDim.x + blockIdx.x) * k;
    inf_block_top_k(best, best_id, count, k, out_s + out, out_id + out);
}

// Pairs: query q's at q * ld (n of them); output k per query.
extern "C" __global__ void top_k_pairs(const float *in_s, const int *in_id, long long ld, int n,
                                       int k, float *out_s, int *out_id) {
    float best[KMAX];
    int best_id[KMAX];
    int count = 0;
    long long q = blockIdx.y;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {
        int id = in_id[q * ld + i];
        if (id >= 0) inf_offer(best, best_id, &count, k, in_s[q * ld + i], id);
    }
    inf_block_top_k(best, best_id, count, k, out_s + q * k, out_id + q * k);
}
