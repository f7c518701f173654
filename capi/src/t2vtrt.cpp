// libt2vtrt: the C ABI of include/t2vtrt.h over the Python runtime (t2vtrt.runtime.embed), embedded once per process.
//
// Design (docs/embedding.md): the numpy runtime stays the one implementation of the sampler loop; this file only
// finds the project's Python environment, starts CPython once, converts arguments, and turns the (status, message,
// value) tuples embed.py returns into t2v_status + a thread-local one-line error. The GIL is taken per call
// (PyGILState_Ensure) and is released by ONNX Runtime / TensorRT while an engine runs and by this file while a
// host's progress callback runs, so calls from many host threads overlap.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define T2VTRT_BUILDING 1
#include "t2vtrt.h"

#include <dlfcn.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <unordered_set>
#include <vector>

#ifndef T2VTRT_DEFAULT_PYTHON_ENV
#define T2VTRT_DEFAULT_PYTHON_ENV ""
#endif

struct t2v_pipeline {
    PyObject* py = nullptr;       // t2vtrt.runtime.pipeline.Pipeline (a strong reference)
    int active = 0;               // calls running on it (guarded by g_mutex)
};

namespace {

thread_local std::string g_error;
std::mutex g_mutex;                               // guards everything below
bool g_started = false;                           // CPython is up and embed imported
std::string g_env;                                // the environment it was started from
PyObject* g_embed = nullptr;                      // the t2vtrt.runtime.embed module
std::unordered_set<const t2v_pipeline*> g_pipelines;  // open handles: a closed or garbage handle is refused, never read
std::unordered_set<const void*> g_buffers;        // video buffers this library allocated and not yet freed

t2v_status fail(t2v_status status, const std::string& message) {
    g_error = message;
    return status;
}

t2v_status ok() {
    g_error.clear();
    return T2V_OK;
}

// Holds the GIL for a scope (any host thread; nests).
class Gil {
public:
    Gil() : state_(PyGILState_Ensure()) {}
    ~Gil() { PyGILState_Release(state_); }
    Gil(const Gil&) = delete;
    Gil& operator=(const Gil&) = delete;
private:
    PyGILState_STATE state_;
};

// A new reference, released at scope end.
class Ref {
public:
    explicit Ref(PyObject* obj = nullptr) : obj_(obj) {}
    ~Ref() { Py_XDECREF(obj_); }
    Ref(const Ref&) = delete;
    Ref& operator=(const Ref&) = delete;
    PyObject* get() const { return obj_; }
    PyObject* release() { PyObject* o = obj_; obj_ = nullptr; return o; }
private:
    PyObject* obj_;
};

bool is_file(const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The pending Python exception as one line (clears it).
std::string python_error() {
    PyObject *type = nullptr, *value = nullptr, *trace = nullptr;
    PyErr_Fetch(&type, &value, &trace);
    PyErr_NormalizeException(&type, &value, &trace);
    std::string text = "unknown Python error";
    if (value != nullptr) {
        PyObject* str = PyObject_Str(value);
        const char* utf8 = str ? PyUnicode_AsUTF8(str) : nullptr;
        const char* name = type ? reinterpret_cast<PyTypeObject*>(type)->tp_name : "Exception";
        text = std::string(name) + ": " + (utf8 ? utf8 : "");
        Py_XDECREF(str);
    }
    PyErr_Clear();
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(trace);
    for (char& c : text) {
        if (c == '\n' || c == '\r') c = ' ';
    }
    return text;
}

// <prefix>/share/t2vtrt/venv beside the installed library (<prefix>/lib/libt2vtrt.so), or "".
std::string install_env() {
    Dl_info info;
    if (dladdr(reinterpret_cast<void*>(&t2v_abi_version), &info) == 0 || info.dli_fname == nullptr) return "";
    std::string lib = info.dli_fname;
    size_t slash = lib.rfind('/');
    if (slash == std::string::npos) return "";
    std::string libdir = lib.substr(0, slash);
    return libdir + "/../share/t2vtrt/venv";
}

// The environment to start from: option, $T2VTRT_PYTHON_ENV, the install location, the build's own.
bool find_env(const char* option, std::string* env, std::string* looked) {
    auto usable = [](const std::string& dir) { return !dir.empty() && is_file(dir + "/bin/python3"); };
    std::vector<std::pair<std::string, std::string>> candidates;  // (where, path)
    const char* var = std::getenv("T2VTRT_PYTHON_ENV");
    if (option != nullptr) candidates.emplace_back("t2v_open_options.python_env", option);
    else if (var != nullptr && *var != '\0') candidates.emplace_back("$T2VTRT_PYTHON_ENV", var);
    else {
        candidates.emplace_back("the install location", install_env());
        candidates.emplace_back("the build's environment", T2VTRT_DEFAULT_PYTHON_ENV);
    }
    for (const auto& [where, path] : candidates) {
        if (usable(path)) {
            *env = path;
            return true;
        }
        if (!looked->empty()) *looked += ", ";
        *looked += where + " " + (path.empty() ? std::string("(unset)") : path + " (no bin/python3)");
    }
    return false;
}

// Start CPython once per process from the environment and import embed; the GIL is released on return.
t2v_status start_runtime(const char* option_env) {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (g_started) return ok();
    bool host_python = Py_IsInitialized();  // the host is itself Python (or started it): use its interpreter
    if (!host_python) {
        std::string env, looked;
        if (!find_env(option_env, &env, &looked)) {
            return fail(T2V_RUNTIME_UNAVAILABLE,
                        "no Python environment with t2v-trt found: looked at " + looked +
                            "; set T2VTRT_PYTHON_ENV (or t2v_open_options.python_env) to the virtualenv where "
                            "t2v-trt[cpu] is installed");
        }
        // Extension modules (numpy, onnxruntime) resolve CPython's symbols globally: promote libpython to
        // RTLD_GLOBAL in case the host dlopen()ed this library with RTLD_LOCAL.
        Dl_info info;
        if (dladdr(reinterpret_cast<void*>(&Py_InitializeFromConfig), &info) != 0 && info.dli_fname != nullptr) {
            dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
        }
        PyConfig config;
        PyConfig_InitPythonConfig(&config);
        config.install_signal_handlers = 0;  // the host owns SIGINT & co.
        config.parse_argv = 0;
        std::string program = env + "/bin/python3";  // getpath finds <env>/pyvenv.cfg from it: sys.prefix = env
        PyStatus status = PyConfig_SetBytesString(&config, &config.program_name, program.c_str());
        if (!PyStatus_Exception(status)) status = Py_InitializeFromConfig(&config);
        PyConfig_Clear(&config);
        if (PyStatus_Exception(status)) {
            return fail(T2V_RUNTIME_UNAVAILABLE, std::string("starting Python from ") + env + " failed: " +
                                                     (status.err_msg ? status.err_msg : "unknown error") +
                                                     "; check that it is a virtualenv of Python " PY_VERSION);
        }
        g_env = env;
    }
    t2v_status result = T2V_OK;
    {
        Gil gil;
        PyObject* module = PyImport_ImportModule("t2vtrt.runtime.embed");
        if (module == nullptr) {
            std::string why = python_error();
            std::string where = g_env.empty() ? std::string("the host's Python") : g_env;
            result = fail(T2V_RUNTIME_UNAVAILABLE, "the Python environment " + where +
                                                       " cannot import t2vtrt.runtime.embed (" + why +
                                                       "); install t2v-trt[cpu] there");
        } else {
            Ref version(PyObject_GetAttrString(module, "ABI_VERSION"));
            long abi = version.get() ? PyLong_AsLong(version.get()) : -1;
            if (abi != T2V_ABI_VERSION) {
                PyErr_Clear();
                Py_DECREF(module);
                result = fail(T2V_RUNTIME_UNAVAILABLE, "the installed t2vtrt.runtime.embed has ABI version " +
                                                           std::to_string(abi) + ", this library " +
                                                           std::to_string(T2V_ABI_VERSION) +
                                                           ": install the library and the package from one release");
            } else {
                g_embed = module;
            }
        }
    }
    if (!host_python) PyEval_SaveThread();  // from now on every call takes the GIL for itself
    if (result != T2V_OK) return result;
    g_started = true;
    return ok();
}

// Turn embed's (status, message, value) into a status; *value gets a new reference to value on T2V_OK.
t2v_status take_result(PyObject* result, PyObject** value) {
    if (result == nullptr) return fail(T2V_INTERNAL, "t2vtrt.runtime.embed raised " + python_error());
    Ref owned(result);
    long status = -1;
    const char* message = nullptr;
    PyObject* val = nullptr;
    if (!PyTuple_Check(result) || PyTuple_GET_SIZE(result) != 3 ||
        (status = PyLong_AsLong(PyTuple_GET_ITEM(result, 0))) < 0 ||
        (message = PyUnicode_AsUTF8(PyTuple_GET_ITEM(result, 1))) == nullptr) {
        PyErr_Clear();
        return fail(T2V_INTERNAL, "t2vtrt.runtime.embed returned something other than (status, message, value)");
    }
    val = PyTuple_GET_ITEM(result, 2);
    if (status != T2V_OK) return fail(static_cast<t2v_status>(status), message);
    if (value != nullptr) {
        Py_INCREF(val);
        *value = val;
    }
    return ok();
}

PyObject* bytes_or_none(const char* text) {
    if (text == nullptr) Py_RETURN_NONE;
    return PyBytes_FromString(text);
}

PyObject* int_or_none(long long value) {
    if (value == T2V_DEFAULT) Py_RETURN_NONE;
    return PyLong_FromLongLong(value);
}

struct Progress {
    t2v_progress_fn fn;
    void* user;
};

// Python-callable (step, total) -> bool: the host's callback, run without the GIL.
PyObject* progress_trampoline(PyObject* self, PyObject* args) {
    int step = 0, total = 0;
    if (!PyArg_ParseTuple(args, "ii", &step, &total)) return nullptr;
    auto* progress = static_cast<Progress*>(PyCapsule_GetPointer(self, "t2vtrt.progress"));
    if (progress == nullptr) return nullptr;
    int stop = 0;
    Py_BEGIN_ALLOW_THREADS
    stop = progress->fn(progress->user, step, total);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(stop != 0);
}

PyMethodDef g_progress_def = {"t2v_progress", progress_trampoline, METH_VARARGS, nullptr};

// Takes a handle for one call (refuses unknown/closed ones); release with leave().
t2v_status enter(t2v_pipeline* pipeline, const char* function) {
    if (pipeline == nullptr) return fail(T2V_INVALID_ARGUMENT, std::string(function) + ": pipeline is NULL: pass the handle t2v_pipeline_open returned");
    std::lock_guard<std::mutex> lock(g_mutex);
    if (g_pipelines.count(pipeline) == 0) {
        return fail(T2V_INVALID_ARGUMENT, std::string(function) + ": pipeline is not an open handle (closed already, or not from t2v_pipeline_open)");
    }
    ++pipeline->active;
    return T2V_OK;
}

void leave(t2v_pipeline* pipeline) {
    std::lock_guard<std::mutex> lock(g_mutex);
    --pipeline->active;
}

double number(PyObject* dict, const char* key) {
    PyObject* item = PyDict_GetItemString(dict, key);  // borrowed
    double value = item ? PyFloat_AsDouble(item) : 0.0;
    if (PyErr_Occurred()) {
        PyErr_Clear();
        value = 0.0;
    }
    return value;
}

t2v_status generate(t2v_pipeline* pipeline, const t2v_generate_params* params, t2v_video* out) {
    Gil gil;
    Progress progress{params->progress, params->progress_user};
    Ref capsule(params->progress ? PyCapsule_New(&progress, "t2vtrt.progress", nullptr) : nullptr);
    Ref callback(capsule.get() ? PyCFunction_New(&g_progress_def, capsule.get()) : nullptr);
    if (params->progress != nullptr && callback.get() == nullptr) return fail(T2V_OUT_OF_MEMORY, "out of memory: " + python_error());
    PyObject* guidance = std::isnan(params->guidance) ? (Py_INCREF(Py_None), Py_None) : PyFloat_FromDouble(params->guidance);
    Ref args(Py_BuildValue("(ONNNNNNNLNNO)", pipeline->py, bytes_or_none(params->prompt),
                           bytes_or_none(params->negative_prompt), int_or_none(params->steps), guidance,
                           int_or_none(params->frames), int_or_none(params->height), int_or_none(params->width),
                           static_cast<long long>(params->seed), bytes_or_none(params->sampler), int_or_none(params->fps),
                           callback.get() ? callback.get() : Py_None));
    if (args.get() == nullptr) return fail(T2V_OUT_OF_MEMORY, "out of memory: " + python_error());
    Ref function(PyObject_GetAttrString(g_embed, "generate"));
    if (function.get() == nullptr) return fail(T2V_INTERNAL, python_error());
    PyObject* value = nullptr;
    t2v_status status = take_result(PyObject_CallObject(function.get(), args.get()), &value);
    if (status != T2V_OK) return status;
    Ref owned(value);
    PyObject* array = nullptr;
    PyObject* timings = nullptr;
    int fps = 0;
    if (!PyArg_ParseTuple(value, "OiO!", &array, &fps, &PyDict_Type, &timings)) {
        return fail(T2V_INTERNAL, "t2vtrt.runtime.embed.generate returned an unexpected value: " + python_error());
    }
    Py_buffer view;
    if (PyObject_GetBuffer(array, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) {
        return fail(T2V_INTERNAL, "the frames are not a contiguous buffer: " + python_error());
    }
    if (view.ndim != 4 || view.shape[3] != 3 || view.itemsize != 1) {
        PyBuffer_Release(&view);
        return fail(T2V_INTERNAL, "the frames are not uint8 (F, H, W, 3)");
    }
    auto* data = static_cast<uint8_t*>(std::malloc(static_cast<size_t>(view.len) > 0 ? static_cast<size_t>(view.len) : 1));
    if (data == nullptr) {
        PyBuffer_Release(&view);
        return fail(T2V_OUT_OF_MEMORY, "out of memory: allocating " + std::to_string(view.len) + " bytes for the video");
    }
    std::memcpy(data, view.buf, static_cast<size_t>(view.len));
    out->data = data;
    out->size = static_cast<size_t>(view.len);
    out->frames = static_cast<int>(view.shape[0]);
    out->height = static_cast<int>(view.shape[1]);
    out->width = static_cast<int>(view.shape[2]);
    out->channels = 3;
    out->fps = fps;
    PyBuffer_Release(&view);
    out->timings.total_s = number(timings, "total_s");
    out->timings.loop_s = number(timings, "loop_s");
    out->timings.text_encoder_s = number(timings, "text_encoder_s");
    out->timings.denoiser_s = number(timings, "denoiser_s");
    out->timings.vae_decoder_s = number(timings, "vae_decoder_s");
    {
        std::lock_guard<std::mutex> lock(g_mutex);
        g_buffers.insert(data);
    }
    return ok();
}

}  // namespace

extern "C" {

int t2v_abi_version(void) { return T2V_ABI_VERSION; }

const char* t2v_status_name(t2v_status status) {
    switch (status) {
        case T2V_OK: return "T2V_OK";
        case T2V_INVALID_ARGUMENT: return "T2V_INVALID_ARGUMENT";
        case T2V_NOT_FOUND: return "T2V_NOT_FOUND";
        case T2V_CORRUPT_ARTIFACT: return "T2V_CORRUPT_ARTIFACT";
        case T2V_OUT_OF_RANGE: return "T2V_OUT_OF_RANGE";
        case T2V_CANCELLED: return "T2V_CANCELLED";
        case T2V_BACKEND_FAILURE: return "T2V_BACKEND_FAILURE";
        case T2V_RUNTIME_UNAVAILABLE: return "T2V_RUNTIME_UNAVAILABLE";
        case T2V_OUT_OF_MEMORY: return "T2V_OUT_OF_MEMORY";
        case T2V_BUSY: return "T2V_BUSY";
        case T2V_INTERNAL: return "T2V_INTERNAL";
    }
    return "T2V_UNKNOWN_STATUS";
}

const char* t2v_last_error(void) { return g_error.c_str(); }

t2v_status t2v_open_options_init(t2v_open_options* options) {
    if (options == nullptr) return fail(T2V_INVALID_ARGUMENT, "t2v_open_options_init: options is NULL: pass the address of a t2v_open_options");
    std::memset(options, 0, sizeof(*options));
    options->struct_size = sizeof(*options);
    options->verify_hashes = 1;
    return T2V_OK;  // the helpers leave the last error alone on success: free/init after a failed call keep its line
}

t2v_status t2v_generate_params_init(t2v_generate_params* params) {
    if (params == nullptr) return fail(T2V_INVALID_ARGUMENT, "t2v_generate_params_init: params is NULL: pass the address of a t2v_generate_params");
    std::memset(params, 0, sizeof(*params));
    params->struct_size = sizeof(*params);
    params->steps = params->frames = params->height = params->width = params->fps = T2V_DEFAULT;
    params->guidance = NAN;
    params->seed = 0;
    return T2V_OK;
}

t2v_status t2v_pipeline_open(const char* target_dir, const t2v_open_options* options, t2v_pipeline** out) {
    try {
        if (out == nullptr) return fail(T2V_INVALID_ARGUMENT, "t2v_pipeline_open: out is NULL: pass the address of a t2v_pipeline*");
        *out = nullptr;
        if (target_dir == nullptr || *target_dir == '\0') {
            return fail(T2V_INVALID_ARGUMENT, "t2v_pipeline_open: target_dir is empty: pass a built target directory such as artifacts/shapes/engines/cpu");
        }
        t2v_open_options defaults;
        t2v_open_options_init(&defaults);
        if (options == nullptr) options = &defaults;
        if (options->struct_size != sizeof(t2v_open_options)) {
            return fail(T2V_INVALID_ARGUMENT, "t2v_pipeline_open: options->struct_size is " + std::to_string(options->struct_size) +
                                                  ", expected " + std::to_string(sizeof(t2v_open_options)) +
                                                  ": initialise options with t2v_open_options_init");
        }
        if (options->threads < 0) {
            return fail(T2V_OUT_OF_RANGE, "t2v_pipeline_open: threads=" + std::to_string(options->threads) + " is negative: pass 0 (the backend's default) or a thread count");
        }
        t2v_status status = start_runtime(options->python_env);
        if (status != T2V_OK) return status;
        PyObject* py = nullptr;
        {
            Gil gil;
            Ref function(PyObject_GetAttrString(g_embed, "open_pipeline"));
            if (function.get() == nullptr) return fail(T2V_INTERNAL, python_error());
            Ref result(PyObject_CallFunction(function.get(), "(yNiii)", target_dir, bytes_or_none(options->precision),
                                             options->low_vram != 0, options->threads, options->verify_hashes != 0));
            status = take_result(result.release(), &py);
        }
        if (status != T2V_OK) return status;
        auto* pipeline = new t2v_pipeline;
        pipeline->py = py;
        {
            std::lock_guard<std::mutex> lock(g_mutex);
            g_pipelines.insert(pipeline);
        }
        *out = pipeline;
        return ok();
    } catch (const std::bad_alloc&) {
        return fail(T2V_OUT_OF_MEMORY, "out of memory opening the pipeline");
    } catch (...) {
        return fail(T2V_INTERNAL, "t2v_pipeline_open: unexpected C++ exception");
    }
}

t2v_status t2v_pipeline_close(t2v_pipeline* pipeline) {
    try {
        if (pipeline == nullptr) return fail(T2V_INVALID_ARGUMENT, "t2v_pipeline_close: pipeline is NULL: pass the handle t2v_pipeline_open returned");
        {
            std::lock_guard<std::mutex> lock(g_mutex);
            if (g_pipelines.count(pipeline) == 0) {
                return fail(T2V_INVALID_ARGUMENT, "t2v_pipeline_close: pipeline is not an open handle (closed already, or not from t2v_pipeline_open)");
            }
            if (pipeline->active > 0) {
                return fail(T2V_BUSY, "t2v_pipeline_close: " + std::to_string(pipeline->active) +
                                          " call(s) still running on this pipeline: close it after they return");
            }
            g_pipelines.erase(pipeline);
        }
        t2v_status status;
        {
            Gil gil;
            Ref function(PyObject_GetAttrString(g_embed, "close_pipeline"));
            status = function.get() ? take_result(PyObject_CallFunctionObjArgs(function.get(), pipeline->py, nullptr), nullptr)
                                    : fail(T2V_INTERNAL, python_error());
            Py_DECREF(pipeline->py);
        }
        delete pipeline;
        return status;
    } catch (...) {
        return fail(T2V_INTERNAL, "t2v_pipeline_close: unexpected C++ exception");
    }
}

t2v_status t2v_generate(t2v_pipeline* pipeline, const t2v_generate_params* params, t2v_video* out) {
    auto start = std::chrono::steady_clock::now();
    try {
        if (out == nullptr) return fail(T2V_INVALID_ARGUMENT, "t2v_generate: out is NULL: pass the address of a t2v_video");
        std::memset(out, 0, sizeof(*out));
        if (params == nullptr) return fail(T2V_INVALID_ARGUMENT, "t2v_generate: params is NULL: pass a t2v_generate_params set up by t2v_generate_params_init");
        if (params->struct_size != sizeof(t2v_generate_params)) {
            return fail(T2V_INVALID_ARGUMENT, "t2v_generate: params->struct_size is " + std::to_string(params->struct_size) +
                                                  ", expected " + std::to_string(sizeof(t2v_generate_params)) +
                                                  ": initialise params with t2v_generate_params_init");
        }
        t2v_status status = enter(pipeline, "t2v_generate");
        if (status != T2V_OK) return status;
        try {
            status = generate(pipeline, params, out);
        } catch (...) {
            leave(pipeline);
            throw;
        }
        leave(pipeline);
        if (status == T2V_OK) {
            out->timings.call_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        }
        return status;
    } catch (const std::bad_alloc&) {
        return fail(T2V_OUT_OF_MEMORY, "out of memory during t2v_generate");
    } catch (...) {
        return fail(T2V_INTERNAL, "t2v_generate: unexpected C++ exception");
    }
}

t2v_status t2v_video_free(t2v_video* video) {
    if (video == nullptr) return fail(T2V_INVALID_ARGUMENT, "t2v_video_free: video is NULL: pass the address of the t2v_video t2v_generate filled");
    if (video->data != nullptr) {
        std::lock_guard<std::mutex> lock(g_mutex);
        if (g_buffers.erase(video->data) == 0) {
            return fail(T2V_INVALID_ARGUMENT, "t2v_video_free: video->data was not allocated by t2v_generate (or was freed through a copy of this t2v_video)");
        }
        std::free(video->data);
    }
    std::memset(video, 0, sizeof(*video));
    return T2V_OK;
}

}  // extern "C"
