#include "plan_report.h"

#include <c10/core/ScalarType.h>

#include <cstdio>
#include <sstream>

namespace myconv::detail {

std::string format_bytes(int64_t bytes) {
  char text[32];
  if (bytes >= (int64_t{1} << 20)) {
    std::snprintf(text, sizeof(text), "%.1fMiB", static_cast<double>(bytes) / (1 << 20));
  } else if (bytes >= (int64_t{1} << 10)) {
    std::snprintf(text, sizeof(text), "%.1fKiB", static_cast<double>(bytes) / (1 << 10));
  } else {
    std::snprintf(text, sizeof(text), "%lldB", static_cast<long long>(bytes));
  }
  return text;
}

std::string dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return "float32";
    case at::kDouble:
      return "float64";
    case at::kHalf:
      return "float16";
    case at::kBFloat16:
      return "bfloat16";
    default:
      return c10::toString(dtype);
  }
}

namespace {

std::string join(at::IntArrayRef values, const char* open, const char* close) {
  std::ostringstream out;
  out << open;
  for (size_t i = 0; i < values.size(); ++i) {
    out << (i ? ", " : "") << values[i];
  }
  out << close;
  return out.str();
}

} // namespace

std::string format_sizes(at::IntArrayRef sizes) {
  return join(sizes, "(", sizes.size() == 1 ? ",)" : ")");
}

std::string json_ints(at::IntArrayRef values) {
  return join(values, "[", "]");
}

namespace {

const char* layout_name(Layout layout) {
  return layout == Layout::kChannelsLast ? "channels_last" : "channels_first";
}

// "8(1image*3136pos)", "32(4/image*784pos)", "2(4images*196pos)".
std::string tiles_text(const TilePlan& t) {
  std::ostringstream out;
  out << t.count << '(';
  if (t.tiles_per_image > 1) {
    out << t.tiles_per_image << "/image*" << t.tile_positions << "pos";
  } else {
    out << t.images_per_tile << (t.images_per_tile == 1 ? "image*" : "images*") << t.L << "pos";
  }
  out << ')';
  return out.str();
}

// A minimal JSON object writer: keys in the order written.
class Json {
 public:
  Json& num(const char* key, int64_t v) {
    sep(key);
    out_ << v;
    return *this;
  }
  Json& flag(const char* key, bool v) {
    sep(key);
    out_ << (v ? "true" : "false");
    return *this;
  }
  Json& str(const char* key, const std::string& v) {
    sep(key);
    out_ << '"';
    for (const char c : v) {
      if (c == '"' || c == '\\') {
        out_ << '\\';
      }
      out_ << c;
    }
    out_ << '"';
    return *this;
  }
  Json& raw(const char* key, const std::string& json) {
    sep(key);
    out_ << json;
    return *this;
  }
  Json& ints(const char* key, std::initializer_list<int64_t> v) {
    sep(key);
    out_ << json_ints(v);
    return *this;
  }
  std::string done() { return out_.str() + "}"; }

 private:
  void sep(const char* key) {
    out_ << (first_ ? "{" : ", ") << '"' << key << "\": ";
    first_ = false;
  }
  std::ostringstream out_;
  bool first_ = true;
};

std::string problem_json(const ConvProblem& p) {
  const ConvGeometry& g = p.geom;
  return Json()
      .num("batch", p.batch)
      .num("in_channels", g.channels)
      .num("out_channels", p.out_channels)
      .num("groups", p.groups)
      .ints("input_size", {g.depth, g.height, g.width})
      .ints("kernel_size", {g.kernel_d, g.kernel_h, g.kernel_w})
      .ints("stride", {g.stride_d, g.stride_h, g.stride_w})
      .ints("padding", {g.pad_d, g.pad_h, g.pad_w})
      .ints("dilation", {g.dilation_d, g.dilation_h, g.dilation_w})
      .ints("output_size", {g.out_d, g.out_h, g.out_w})
      .done();
}

} // namespace

std::string plan_summary(const PassPlan& plan) {
  std::ostringstream out;
  out << pass_name(plan.pass) << " path=" << path_name(plan.path) << " layout=" << layout_name(plan.layout)
      << " engine=" << plan.engine;
  if (plan.path == Path::kDirectGrouped) {
    return out.str();
  }
  const GemmShape& m = plan.gemm;
  out << " gemm=" << m.batch << 'x' << m.m << 'x' << m.n << 'x' << m.k;
  if (plan.image_gemms) {  // (B is then the images of a call, one call per group)
    out << " gemm_calls=" << m.calls;
  }
  out << " tiles=" << tiles_text(plan.tiles);
  if (plan.out_blocks > 1) {
    out << " out_blocks=" << plan.out_blocks << 'x' << plan.out_block_rows << " wave=" << plan.wave;
  }
  if (plan.blocks.count() > 1) {
    out << " blocks=" << plan.blocks.count();
    if (plan.blocks.splits_channels()) {
      out << 'x' << plan.blocks.block_channels << "ch";
    }
  }
  if (plan.pass == Pass::kGradWeight) {
    out << " chunks=" << plan.chunks;
  }
  out << " items=" << plan.items << " workers=" << plan.workers
      << " workspace=" << format_bytes(plan.workspace_bytes());
  if (std::string(plan.autotune) != "off") {
    out << " autotune=" << plan.autotune << "(tile " << format_bytes(plan.tuning.tile_bytes) << ')';
  }
  return out.str();
}

std::string plan_json(const PassPlan& plan, const ConvProblem& p, const char* computes) {
  Json j;
  j.str("computes", computes)
      .str("pass", pass_name(plan.pass))
      .str("path", path_name(plan.path))
      .str("layout", layout_name(plan.layout))
      .str("dtype", dtype_name(plan.dtype))
      .str("engine", plan.engine)
      .str("autotune", plan.autotune)
      .raw("problem", problem_json(p));
  if (plan.path != Path::kDirectGrouped) {
    const GemmShape& m = plan.gemm;
    j.raw("gemm", Json().num("batch", m.batch).num("m", m.m).num("n", m.n).num("k", m.k).num("calls", m.calls).done())
        .raw("tiles", Json()
                          .num("count", plan.tiles.count)
                          .num("images_per_tile", plan.tiles.images_per_tile)
                          .num("tiles_per_image", plan.tiles.tiles_per_image)
                          .num("positions_per_tile", plan.tiles.max_positions())
                          .num("tile_bytes", plan.tuning.tile_bytes)
                          .done())
        .raw("channel_blocks", Json()
                                   .num("count", plan.blocks.count())
                                   .num("channels", plan.blocks.splits_channels()
                                                        ? plan.blocks.block_channels
                                                        : plan.blocks.group_channels *
                                                              (plan.blocks.all_groups ? plan.blocks.groups : 1))
                                   .done())
        .raw("output_channel_blocks",
             Json().num("count", plan.out_blocks).num("channels", plan.out_block_rows).done())
        .num("wave", plan.wave)
        .num("chunks", plan.chunks)
        .flag("into_result", plan.into_result)
        .flag("output_in_place", plan.output_in_place)
        .flag("gather_grad_output", plan.gather_grad_output);
  }
  j.num("items", plan.items)
      .num("workers", plan.workers)
      .raw("workspace", Json()
                            .num("per_worker", plan.worker_bytes)
                            .num("workers", plan.workers * plan.worker_bytes)
                            .num("shared_columns", plan.shared_bytes)
                            .num("partial_sums", plan.partial_bytes)
                            .num("packed_weight", plan.packed_bytes)
                            .num("image_products", plan.image_product_bytes)
                            .num("total", plan.workspace_bytes())
                            .num("limit", plan.settings.workspace_limit)
                            .done())
      .str("summary", plan_summary(plan));
  return j.done();
}

} // namespace myconv::detail
