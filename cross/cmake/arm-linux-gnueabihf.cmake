# CMake toolchain file: 32-bit ARMv7+ Linux, EABI hard-float (glibc), with Debian's cross GCC.
# Board: hi3519a's ARMv7 userland as the emulated Debian armhf rootfs runs it
#        (-mcpu=cortex-a53 -mfpu=neon-vfpv4, hard-float ABI).
# Needs: apt-get install g++-arm-linux-gnueabihf   (scripts/setup.sh installs it)
#
# The real Hi3519A camera firmware is SOFT-float (arm-himix200-linux, -mfloat-abi=softfp):
# code that links HiSilicon's libmpi/libnnie must be built with the vendor's himix toolchain
# instead. Set EDGESDK_CROSS_PREFIX=arm-himix200-linux- and EDGESDK_EXTRA_FLAGS to the SDK's
# "-mfloat-abi=softfp;-mfpu=neon-vfpv4", or use the vendor's own file; see cross/README.md.
set(EDGESDK_TRIPLE arm-linux-gnueabihf)
set(CMAKE_SYSTEM_PROCESSOR armv7l)
include("${CMAKE_CURRENT_LIST_DIR}/_edgesdk-common.cmake")
