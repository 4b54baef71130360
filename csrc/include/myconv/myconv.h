// myconv for C++ (LibTorch) programs: the functional API (<myconv/ops.h>) and
// the modules (<myconv/nn.h>).
//
//   find_package(myconv CONFIG REQUIRED)
//   target_link_libraries(app PRIVATE myconv::myconv)
//
//   #include <myconv/myconv.h>
//   myconv::nn::Conv2d conv(myconv::nn::Conv2dOptions(3, 16, 3).padding(1));
//   at::Tensor y = conv->forward(x);               // or myconv::conv2d(x, w, b, ...)
#pragma once

#include "nn.h"
#include "ops.h"
