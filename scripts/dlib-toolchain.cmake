# Read by CMake (>= 3.21) through the CMAKE_TOOLCHAIN_FILE environment variable while
# scripts/setup.sh builds dlib. dlib means to turn pybind11's link-time optimisation off, but
# the pybind11 it bundles ignores that; defining this variable does it. LTO made the link
# single-threaded and several minutes long and did not make dlib faster.
set(CMAKE_INTERPROCEDURAL_OPTIMIZATION OFF)
