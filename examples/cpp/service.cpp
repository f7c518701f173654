// service.cpp - a small multi-threaded "service": one t2v::Pipeline, N worker threads, a queue of requests.
//
//   t2v_service_example TARGET_DIR REQUESTS.tsv OUT_DIR [WORKERS] [PRECISION]
//
// REQUESTS.tsv: one request a line, "seed<TAB>steps<TAB>sampler<TAB>prompt" (steps 0 / sampler "-" = the default).
// Request i is written to OUT_DIR/<i>.rgb (raw RGB24, frames x height x width x 3). Prints one line per request
// ("<i> <status> <seconds>") and a summary ("served N in S s: R requests/s with W workers").
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <queue>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "t2vtrt.hpp"

namespace {

struct Request {
    int id;
    t2v::Params params;
};

// A closable FIFO shared by the workers.
class Queue {
public:
    void push(Request request) {
        std::lock_guard<std::mutex> lock(mutex_);
        items_.push(std::move(request));
        ready_.notify_one();
    }
    void close() {
        std::lock_guard<std::mutex> lock(mutex_);
        closed_ = true;
        ready_.notify_all();
    }
    bool pop(Request* out) {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [&] { return closed_ || !items_.empty(); });
        if (items_.empty()) return false;
        *out = std::move(items_.front());
        items_.pop();
        return true;
    }
private:
    std::mutex mutex_;
    std::condition_variable ready_;
    std::queue<Request> items_;
    bool closed_ = false;
};

std::vector<Request> read_requests(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot read " + path);
    std::vector<Request> requests;
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty()) continue;
        std::istringstream fields(line);
        std::string seed, steps, sampler, prompt;
        std::getline(fields, seed, '\t');
        std::getline(fields, steps, '\t');
        std::getline(fields, sampler, '\t');
        std::getline(fields, prompt);
        Request request{static_cast<int>(requests.size()), {}};
        request.params.prompt = prompt;
        request.params.seed = std::stoll(seed);
        if (std::stoi(steps) > 0) request.params.steps = std::stoi(steps);
        if (sampler != "-") request.params.sampler = sampler;
        requests.push_back(std::move(request));
    }
    return requests;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 4) {
        std::cerr << "usage: " << argv[0] << " TARGET_DIR REQUESTS.tsv OUT_DIR [WORKERS] [PRECISION]\n";
        return 1;
    }
    const std::string out_dir = argv[3];
    const int workers = argc > 4 ? std::stoi(argv[4]) : 4;
    try {
        t2v::OpenOptions options;
        if (argc > 5) options.precision = argv[5];
        t2v::Pipeline pipeline(argv[1], options);
        std::vector<Request> requests = read_requests(argv[2]);
        Queue queue;
        std::mutex print;
        std::atomic<int> failures{0};
        auto start = std::chrono::steady_clock::now();
        std::vector<std::thread> threads;
        for (int w = 0; w < workers; ++w) {
            threads.emplace_back([&] {
                Request request;
                while (queue.pop(&request)) {
                    std::string status = "T2V_OK";
                    double seconds = 0;
                    try {
                        t2v::Video video = pipeline.generate(request.params);
                        seconds = video.timings().call_s;
                        std::string path = out_dir + "/" + std::to_string(request.id) + ".rgb";
                        std::FILE* file = std::fopen(path.c_str(), "wb");
                        if (file == nullptr || std::fwrite(video.data(), 1, video.size(), file) != video.size()) status = "write-failed";
                        if (file != nullptr) std::fclose(file);
                    } catch (const t2v::Error& error) {
                        status = std::string(error.status_name()) + " " + error.what();
                    }
                    if (status != "T2V_OK") ++failures;
                    std::lock_guard<std::mutex> lock(print);
                    std::cout << request.id << " " << status << " " << seconds << "\n";
                }
            });
        }
        for (auto& request : requests) queue.push(std::move(request));
        queue.close();
        for (auto& thread : threads) thread.join();
        double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        std::cout << "served " << requests.size() << " in " << wall << " s: " << requests.size() / wall
                  << " requests/s with " << workers << " workers\n";
        return failures == 0 ? 0 : 3;
    } catch (const t2v::Error& error) {
        std::cerr << error.status_name() << ": " << error.what() << "\n";
        return 2;
    } catch (const std::exception& error) {
        std::cerr << "error: " << error.what() << "\n";
        return 1;
    }
}
