// Prints llama.cpp's 20 most probable next tokens after a prompt given as token ids, as
// "id probability" lines (softmax in double over the full vocabulary).
//
// usage: probe MODEL FLASH_ATTN(-1 auto|0 off|1 on) THREADS MODE ID,ID,...
// MODE batch feeds the ids as one batch (what llama.cpp's tools do); tokenwise decodes them
// one at a time (a legitimate way that takes other kernel paths); a number P feeds the first P
// ids as one batch and the rest one at a time, as generation after a P-token prompt does.
#include "llama.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

int main(int argc, char ** argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: probe MODEL FLASH_ATTN THREADS batch|tokenwise|P ID,ID,...\n");
        return 2;
    }
    llama_backend_init();
    llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
    llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 2048;
    cp.n_threads = cp.n_threads_batch = atoi(argv[3]);
    cp.flash_attn_type = (llama_flash_attn_type) atoi(argv[2]);
    llama_context * ctx = llama_init_from_model(model, cp);

    std::vector<llama_token> ids;
    std::stringstream list(argv[5]);
    for (std::string id; std::getline(list, id, ',');) {
        ids.push_back(atoi(id.c_str()));
    }
    const std::string mode = argv[4];
    const size_t prompt = mode == "batch" ? ids.size() : mode == "tokenwise" ? 1 : atoi(mode.c_str());
    for (size_t at = 0; at < ids.size();) {
        const int n = at == 0 ? (int) std::max<size_t>(1, std::min(prompt, ids.size())) : 1;
        if (llama_decode(ctx, llama_batch_get_one(&ids[at], n)) != 0) {
            fprintf(stderr, "llama_decode failed\n");
            return 1;
        }
        at += n;
    }
    const float * logits = llama_get_logits_ith(ctx, -1);
    const int vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    const double top = *std::max_element(logits, logits + vocab);
    double z = 0;
    for (int i = 0; i < vocab; i++) {
        z += std::exp(logits[i] - top);
    }
    std::vector<int> order(vocab);
    for (int i = 0; i < vocab; i++) {
        order[i] = i;
    }
    std::partial_sort(order.begin(), order.begin() + 20, order.end(),
                      [&](int a, int b) { return logits[a] > logits[b]; });
    for (int j = 0; j < 20; j++) {
        printf("%d %.6f\n", order[j], std::exp(logits[order[j]] - top) / z);
    }
    return 0;
}
