# CMake toolchain file: 64-bit ARM Linux (glibc) with Debian's cross GCC.
# Boards: rpi4 (cortex-a72), rpi5 (cortex-a76), kv260 and x3 (cortex-a53), coral-usb's host.
# Needs: apt-get install g++-aarch64-linux-gnu   (scripts/setup.sh installs it)
#
#   cmake -S src -B build -DCMAKE_TOOLCHAIN_FILE=cross/cmake/aarch64-linux-gnu.cmake \
#         -DEDGESDK_MCPU=cortex-a72 [-DEDGESDK_SYSROOT=~/.cache/edgesdk/emulators/rpi4/rootfs]
#
# `edgesdk cross build SRC --board rpi4` does this for you. See cross/README.md.
set(EDGESDK_TRIPLE aarch64-linux-gnu)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
include("${CMAKE_CURRENT_LIST_DIR}/_edgesdk-common.cmake")
