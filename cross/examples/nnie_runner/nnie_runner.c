/* NNIE runner for an edgesdk bundle segment: load a .wk, forward one input, write outputs as float32.
 *
 * SKELETON, NOT BUILT OR RUN HERE: written against the documented HiSilicon MPP NNIE API names
 * (mpi_nnie.h / hi_nnie.h of the Hi3519A V100 SDK); check every struct field against your SDK.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hi_comm_svp.h"
#include "hi_nnie.h"
#include "mpi_nnie.h"
#include "mpi_sys.h"

#define CHECK(x) do { HI_S32 r_ = (x); if (r_ != HI_SUCCESS) { \
    fprintf(stderr, "%s failed: 0x%x\n", #x, r_); return 1; } } while (0)

static HI_S32 mmz_alloc(HI_U64 *phys, HI_VOID **virt, HI_U32 size, const char *name) {
    return HI_MPI_SYS_MmzAlloc_Cached(phys, virt, name, NULL, size);
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s model.wk input.f32 out_dir\n", argv[0]); return 2; }
    /* 1. the .wk into MMZ, then HI_MPI_SVP_NNIE_LoadModel */
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 1; }
    fseek(f, 0, SEEK_END); long wk_size = ftell(f); fseek(f, 0, SEEK_SET);
    SVP_MEM_INFO_S wk = {0};
    CHECK(mmz_alloc(&wk.u64PhyAddr, (HI_VOID **)&wk.u64VirAddr, (HI_U32)wk_size, "edgesdk_wk"));
    wk.u32Size = (HI_U32)wk_size;
    if (fread((void *)(HI_UL)wk.u64VirAddr, 1, wk_size, f) != (size_t)wk_size) { fclose(f); return 1; }
    fclose(f);
    SVP_NNIE_MODEL_S model;
    memset(&model, 0, sizeof(model));
    CHECK(HI_MPI_SVP_NNIE_LoadModel(&wk, &model));

    /* 2. forward control, task buffer, input/output blobs (sizes from model.astSeg[0]); see sample_nnie.c */
    SVP_NNIE_FORWARD_CTRL_S ctrl;
    memset(&ctrl, 0, sizeof(ctrl));
    ctrl.u32SrcNum = model.astSeg[0].u16SrcNum;
    ctrl.u32DstNum = model.astSeg[0].u16DstNum;
    ctrl.u32NetSegId = 0;
    ctrl.enNnieId = SVP_NNIE_ID_0;
    /* ... allocate ctrl.stTmpBuf / stTskBuf, the src blobs (read argv[2] into them, U8 image or S32 feature
     *     map = float * 4096) and the dst blobs: SAMPLE_SVP_NNIE_ParamInit in sample_nnie.c shows the sizes. */
    SVP_SRC_BLOB_S src[16];
    SVP_DST_BLOB_S dst[16];
    memset(src, 0, sizeof(src));
    memset(dst, 0, sizeof(dst));

    SVP_NNIE_HANDLE handle = 0;
    CHECK(HI_MPI_SVP_NNIE_Forward(&handle, src, &model, dst, &ctrl, HI_TRUE));
    HI_BOOL finished = HI_FALSE;
    while (HI_MPI_SVP_NNIE_Query(ctrl.enNnieId, handle, &finished, HI_TRUE) == HI_ERR_SVP_NNIE_QUERY_TIMEOUT) {
    }

    /* 3. outputs: S32 with 4096 = 1.0 -> float32 files out_dir/out<i>.f32 for the next (CPU) segment */
    for (HI_U32 i = 0; i < ctrl.u32DstNum; i++) {
        char path[512];
        snprintf(path, sizeof(path), "%s/out%u.f32", argv[3], i);
        /* ... HI_MPI_SYS_MmzFlushCache, then write dst[i] row by row (u32Stride) as float = s32 / 4096.0f */
        (void)path;
    }
    CHECK(HI_MPI_SVP_NNIE_UnloadModel(&model));
    HI_MPI_SYS_MmzFree(wk.u64PhyAddr, (HI_VOID *)(HI_UL)wk.u64VirAddr);
    return 0;
}
