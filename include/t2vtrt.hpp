// t2vtrt.hpp - header-only C++17 wrapper of the C ABI (t2vtrt.h): RAII handles, exceptions carrying the status,
// std::function progress with cancellation. Nothing here crosses the ABI as a C++ type.
//
//   t2v::Pipeline pipe("artifacts/shapes/engines/cpu");
//   t2v::Params params; params.prompt = "a red circle moving left"; params.steps = 15;
//   t2v::Video video = pipe.generate(params, [](int step, int total) { return keep_going; });  // false cancels
//   video.data(), video.frames(), video.height(), video.width(), video.timings().total_s
#ifndef T2VTRT_HPP
#define T2VTRT_HPP

#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "t2vtrt.h"

namespace t2v {

// A failed call: what() is t2v_last_error()'s line, status() the t2v_status.
class Error : public std::runtime_error {
public:
    Error(t2v_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
    t2v_status status() const noexcept { return status_; }
    const char* status_name() const noexcept { return t2v_status_name(status_); }
private:
    t2v_status status_;
};

// The progress callback's return value ends the call with T2V_CANCELLED.
class Cancelled : public Error {
public:
    explicit Cancelled(const std::string& message) : Error(T2V_CANCELLED, message) {}
};

inline void check(t2v_status status) {
    if (status == T2V_OK) return;
    std::string message = t2v_last_error();
    if (status == T2V_CANCELLED) throw Cancelled(message);
    throw Error(status, message);
}

struct OpenOptions {
    std::optional<std::string> precision;  // empty = the manifest's default
    bool low_vram = false;
    int threads = 0;
    bool verify_hashes = true;
    std::optional<std::string> python_env;
};

struct Params {
    std::string prompt;
    std::string negative_prompt;
    std::optional<int> steps, frames, height, width, fps;  // empty = the manifest's default
    std::optional<double> guidance;
    std::int64_t seed = 0;
    std::optional<std::string> sampler;
};

// Returns true to go on, false to cancel.
using Progress = std::function<bool(int step, int total)>;

// A generated video: uint8 frames x height x width x 3, freed with the object. Move-only.
class Video {
public:
    Video() { raw_ = t2v_video{}; }
    explicit Video(const t2v_video& raw) : raw_(raw) {}
    ~Video() { t2v_video_free(&raw_); }
    Video(Video&& other) noexcept : raw_(other.raw_) { other.raw_ = t2v_video{}; }
    Video& operator=(Video&& other) noexcept {
        if (this != &other) {
            t2v_video_free(&raw_);
            raw_ = other.raw_;
            other.raw_ = t2v_video{};
        }
        return *this;
    }
    Video(const Video&) = delete;
    Video& operator=(const Video&) = delete;

    const std::uint8_t* data() const noexcept { return raw_.data; }
    std::size_t size() const noexcept { return raw_.size; }
    int frames() const noexcept { return raw_.frames; }
    int height() const noexcept { return raw_.height; }
    int width() const noexcept { return raw_.width; }
    int channels() const noexcept { return raw_.channels; }
    int fps() const noexcept { return raw_.fps; }
    const t2v_timings& timings() const noexcept { return raw_.timings; }
    const t2v_video& raw() const noexcept { return raw_; }
private:
    t2v_video raw_;
};

// One opened target directory; thread-safe: share one Pipeline between threads. Move-only.
class Pipeline {
public:
    explicit Pipeline(const std::string& target_dir, const OpenOptions& options = {}) {
        t2v_open_options raw;
        check(t2v_open_options_init(&raw));
        raw.precision = options.precision ? options.precision->c_str() : nullptr;
        raw.low_vram = options.low_vram ? 1 : 0;
        raw.threads = options.threads;
        raw.verify_hashes = options.verify_hashes ? 1 : 0;
        raw.python_env = options.python_env ? options.python_env->c_str() : nullptr;
        check(t2v_pipeline_open(target_dir.c_str(), &raw, &handle_));
    }
    ~Pipeline() {
        if (handle_ != nullptr) t2v_pipeline_close(handle_);
    }
    Pipeline(Pipeline&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
    Pipeline& operator=(Pipeline&& other) noexcept {
        if (this != &other) {
            if (handle_ != nullptr) t2v_pipeline_close(handle_);
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }
    Pipeline(const Pipeline&) = delete;
    Pipeline& operator=(const Pipeline&) = delete;

    Video generate(const Params& params, const Progress& progress = nullptr) const {
        t2v_generate_params raw;
        check(t2v_generate_params_init(&raw));
        raw.prompt = params.prompt.c_str();
        raw.negative_prompt = params.negative_prompt.c_str();
        raw.steps = params.steps.value_or(T2V_DEFAULT);
        raw.frames = params.frames.value_or(T2V_DEFAULT);
        raw.height = params.height.value_or(T2V_DEFAULT);
        raw.width = params.width.value_or(T2V_DEFAULT);
        raw.fps = params.fps.value_or(T2V_DEFAULT);
        raw.guidance = params.guidance.value_or(NAN);
        raw.seed = params.seed;
        raw.sampler = params.sampler ? params.sampler->c_str() : nullptr;
        if (progress) {
            raw.progress = &Pipeline::trampoline;
            raw.progress_user = const_cast<Progress*>(&progress);
        }
        t2v_video out;
        check(t2v_generate(handle_, &raw, &out));
        return Video(out);
    }

    // Closes now (the destructor would); throws t2v::Error (T2V_BUSY) while calls run.
    void close() {
        if (handle_ != nullptr) {
            check(t2v_pipeline_close(handle_));
            handle_ = nullptr;
        }
    }

    t2v_pipeline* handle() const noexcept { return handle_; }

private:
    static int trampoline(void* user, int step, int total) {
        try {
            return (*static_cast<const Progress*>(user))(step, total) ? 0 : 1;
        } catch (...) {
            return 1;  // an exception must not unwind through C: cancel instead
        }
    }
    t2v_pipeline* handle_ = nullptr;
};

inline int abi_version() { return t2v_abi_version(); }

}  // namespace t2v

#endif  // T2VTRT_HPP
