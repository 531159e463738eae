// Decodes GGML blocks with ggml's own C decoders, for tools/archs/quant_reference.py.
// usage: dequant_probe TYPE_ID HEX   (HEX: whole blocks of that type)
// prints the floats, one per line, as %.9g.
#include "ggml.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

int main(int argc, char ** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: dequant_probe TYPE_ID HEX\n");
        return 2;
    }
    const auto type = (ggml_type) atoi(argv[1]);
    const ggml_type_traits * t = ggml_get_type_traits(type);
    const std::string hex = argv[2];
    std::vector<unsigned char> bytes(hex.size() / 2);
    for (size_t i = 0; i < bytes.size(); ++i) {
        bytes[i] = (unsigned char) strtol(hex.substr(2 * i, 2).c_str(), nullptr, 16);
    }
    if (!t->to_float || bytes.size() % t->type_size != 0) {
        fprintf(stderr, "type %d cannot decode %zu bytes\n", (int) type, bytes.size());
        return 1;
    }
    const int64_t n = (int64_t) (bytes.size() / t->type_size) * t->blck_size;
    std::vector<float> out(n);
    t->to_float(bytes.data(), out.data(), n);
    for (float v : out) printf("%.9g\n", v);
    return 0;
}
