// consumer TARGET_DIR OUT.rgb: the C++ wrapper end to end (RAII, exceptions with the status, progress + cancel).
// Prints "cancelled <status name> <steps seen>", "error <status name>", then writes one video's bytes.
#include <cstdio>
#include <iostream>

#include "t2vtrt.hpp"

int main(int argc, char** argv) {
    if (argc < 3) return 1;
    t2v::Pipeline pipeline(argv[1]);
    t2v::Params params;
    params.prompt = "a red circle moving left";
    params.steps = 3;
    params.seed = 7;
    params.sampler = "dpm++";
    int seen = 0;
    try {
        pipeline.generate(params, [&](int step, int) { seen = step; return step < 2; });
        std::cout << "cancelled none\n";
    } catch (const t2v::Cancelled& error) {
        std::cout << "cancelled " << error.status_name() << " " << seen << "\n";
    }
    try {
        t2v::Params bad = params;
        bad.steps = 0;
        pipeline.generate(bad);
        std::cout << "error none\n";
    } catch (const t2v::Error& error) {
        std::cout << "error " << error.status_name() << "\n";
    }
    t2v::Video video = pipeline.generate(params, [](int, int) { return true; });
    t2v::Video moved = std::move(video);
    std::FILE* file = std::fopen(argv[2], "wb");
    std::fwrite(moved.data(), 1, moved.size(), file);
    std::fclose(file);
    std::cout << "video " << moved.frames() << " " << moved.height() << " " << moved.width() << "\n";
    return 0;
}
