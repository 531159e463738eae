// Greedy decoding in llama.cpp with the top-10 next-token probabilities at every step, for
// tools/archs/compare.py: the prompt (token ids) runs as one batch, then each greedy token one
// at a time, as generation does. Flash attention off (its CPU path accumulates in F16).
//
// usage: probe_greedy MODEL N_CTX THREADS STEPS ID,ID,... [FORCED,...]
// prints one line per step: "token id:p id:p ..." (ten pairs, most probable first; softmax in
// double over the full vocabulary). With FORCED, step i feeds FORCED[i] instead of its greedy
// token (to read another model's probabilities along the same path); then the ten pairs are
// those of the ids listed in TOP_IDS (environment, one comma list per step, ';'-separated).
#include "llama.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

int main(int argc, char ** argv) {
    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: probe_greedy MODEL N_CTX THREADS STEPS ID,ID,... [FORCED,...]\n");
        return 2;
    }
    llama_backend_init();
    if (!getenv("PROBE_LOG")) {
        llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
    }
    llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = atoi(argv[2]);
    cp.n_batch = cp.n_ctx;
    cp.n_threads = cp.n_threads_batch = atoi(argv[3]);
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    llama_context * ctx = llama_init_from_model(model, cp);
    const int steps = atoi(argv[4]);
    std::vector<llama_token> ids;
    auto parse = [](const char * text) {
        std::vector<llama_token> out;
        std::stringstream list(text);
        for (std::string id; std::getline(list, id, ',');) {
            out.push_back(atoi(id.c_str()));
        }
        return out;
    };
    ids = parse(argv[5]);
    const std::vector<llama_token> forced = argc == 7 ? parse(argv[6]) : std::vector<llama_token>();
    std::vector<std::vector<llama_token>> top_ids;
    if (const char * env = getenv("TOP_IDS")) {
        std::stringstream steps_list(env);
        for (std::string step; std::getline(steps_list, step, ';');) {
            top_ids.push_back(parse(step.c_str()));
        }
    }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    std::vector<llama_token> next = ids;
    for (int step = 0; step < steps; ++step) {
        if (llama_decode(ctx, llama_batch_get_one(next.data(), (int) next.size())) != 0) {
            fprintf(stderr, "llama_decode failed\n");
            return 1;
        }
        const float * logits = llama_get_logits_ith(ctx, -1);
        double max = logits[0];
        for (int i = 1; i < n_vocab; ++i) max = std::max(max, (double) logits[i]);
        std::vector<double> p(n_vocab);
        double sum = 0;
        for (int i = 0; i < n_vocab; ++i) sum += p[i] = std::exp(logits[i] - max);
        std::vector<int> order(n_vocab);
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(order.begin(), order.begin() + 10, order.end(),
                          [&](int a, int b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
        const llama_token chosen = step < (int) forced.size() ? forced[step] : order[0];
        if (step < (int) top_ids.size()) {
            order.assign(top_ids[step].begin(), top_ids[step].end());
        }
        printf("%d", chosen);
        for (size_t j = 0; j < std::min<size_t>(10, order.size()); ++j) {
            printf(" %d:%.6f", order[j], p[order[j]] / sum);
        }
        printf("\n");
        next.assign(1, chosen);
    }
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
