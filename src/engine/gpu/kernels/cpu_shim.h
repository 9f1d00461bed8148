// What the CPU harnesses need to compile a CUDA kernel file as C++: each
// CUDA thread a pthread (threadIdx per thread), blocks one after another
// (blockIdx, blockDim, gridDim shared), __syncthreads a barrier across the
// block's threads, __shared__ a static the block's threads share.
#include <pthread.h>
#include <vector>

struct dim3_shim { unsigned x, y, z; };
static thread_local dim3_shim threadIdx;
static dim3_shim blockIdx, blockDim, gridDim;
static pthread_barrier_t block_barrier;
#define __global__
#define __device__
#define __shared__ static
#define __syncthreads() pthread_barrier_wait(&block_barrier)
