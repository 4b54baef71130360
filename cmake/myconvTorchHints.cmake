# Hints for find_package(Torch) with pip's CUDA builds of torch, used by
# myconv's own CMakeLists.txt and by its installed package config.
#
# A CUDA build of torch makes find_package(Torch) look for the CUDA toolkit
# and nvrtc. pip's CUDA wheels keep part of the toolkit (nvrtc, the cuBLAS
# headers) under site-packages/nvidia/; point the lookup there and at the usual
# toolkit root. Torch's own config is located the way find_package would (the
# CMAKE_PREFIX_PATH variable or environment variable, <prefix> being
# .../torch/share/cmake or .../torch, or Torch_DIR); its site-packages' nvidia/*
# folders are then MYCONV_NVIDIA_DIRS. The user's choices win: Torch_DIR,
# CUDA_TOOLKIT_ROOT_DIR, CMAKE_CUDA_COMPILER, the CUDACXX and CUDA_HOME
# environment variables.
function(myconv_torch_hints)
  set(config_dirs "")
  if(Torch_DIR)
    list(APPEND config_dirs "${Torch_DIR}")
  endif()
  find_path(MYCONV_TORCH_CONFIG_DIR TorchConfig.cmake PATH_SUFFIXES share/cmake/Torch Torch
            DOC "torch's CMake config folder, for myconv's CUDA hints")
  if(MYCONV_TORCH_CONFIG_DIR)
    list(APPEND config_dirs "${MYCONV_TORCH_CONFIG_DIR}")
  endif()
  set(nvidia_dirs "")
  foreach(dir IN LISTS config_dirs)
    # <site-packages>/torch/share/cmake/Torch -> <site-packages>/nvidia/<pkg>
    # (pip's torch only: not a LibTorch folder that merely has a neighbour
    # called nvidia)
    if(EXISTS "${dir}/../../../__init__.py")
      file(GLOB found LIST_DIRECTORIES true "${dir}/../../../../nvidia/*")
      list(APPEND nvidia_dirs ${found})
    endif()
  endforeach()
  list(REMOVE_DUPLICATES nvidia_dirs)
  set(MYCONV_NVIDIA_DIRS "${nvidia_dirs}" PARENT_SCOPE)

  set(root "${CUDA_TOOLKIT_ROOT_DIR}")
  if(NOT root)
    if(DEFINED ENV{CUDA_HOME})
      set(root "$ENV{CUDA_HOME}")
    elseif(EXISTS /usr/local/cuda)
      set(root /usr/local/cuda)
    endif()
    set(CUDA_TOOLKIT_ROOT_DIR "${root}" PARENT_SCOPE)
  endif()
  if(root AND NOT DEFINED CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS "${root}/bin/nvcc")
    set(CMAKE_CUDA_COMPILER "${root}/bin/nvcc" PARENT_SCOPE)
  endif()
  find_library(CUDA_nvrtc_LIBRARY NAMES nvrtc libnvrtc.so.13 libnvrtc.so.12
               HINTS ${root}/lib64 ${nvidia_dirs} PATH_SUFFIXES lib)
endfunction()
myconv_torch_hints()
