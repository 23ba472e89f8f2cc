// A training loop written out by hand against the installed package: data, model, AdamW with
// the warmup + cosine schedule, a checkpoint. Usage: train_loop [checkpoint.safetensors]
#include <convnext/convnext.h>

#include <cstdio>
#include <filesystem>

using namespace cnx;

// The first n images of Fashion-MNIST, or where Debian's dataset-fashion-mnist is absent, n
// synthetic 32x32 images whose class k is a bright horizontal band at rows 3k..3k+2.
class SmallSet : public data::Dataset {
public:
    explicit SmallSet(int64_t n) : n_(n) {
        if (std::filesystem::exists(std::string(data::kFashionMnistDir) + "/train-labels-idx1-ubyte.gz"))
            fmnist_ = data::FashionMnistDataset::load(data::kFashionMnistDir, /*train=*/true);
    }
    int64_t size() const override { return n_; }
    data::Sample get(int64_t i, Generator& gen) const override {
        if (fmnist_) return fmnist_->get(i, gen);
        data::Sample s{mul(randn({32, 32, 1}, DType::F32, &gen), 0.3), i % 10};
        for (int64_t x = 0; x < 3 * 32; ++x) s.image.data<float>()[3 * s.label * 32 + x] += 1.0f;
        return s;
    }

private:
    int64_t n_;
    std::shared_ptr<data::FashionMnistDataset> fmnist_;
};

int main(int argc, char** argv) {
    const std::string checkpoint = argc > 1 ? argv[1] : "train_loop.safetensors";
    const int64_t epochs = 3;
    data::LoaderOptions lo;
    lo.batch_size = 32;
    lo.drop_last = true;
    data::DataLoader loader(std::make_shared<SmallSet>(640), lo);

    models::ConvNeXtOptions mo;  // ConvNeXt-atto on 32x32 grey images, 10 classes
    mo.in_chans = 1;
    mo.num_classes = 10;
    Generator gen(0);
    auto model = models::create_model("convnext_atto", mo, &gen);
    optim::AdamW opt(model->named_parameters(), optim::AdamWOptions(4e-3).weight_decay(0.05));
    optim::LambdaLR sched(opt, optim::WarmupCosine(loader.batches_per_epoch(), epochs));

    std::vector<double> losses;
    for (int64_t epoch = 0; epoch < epochs; ++epoch) {
        loader.start_epoch(epoch);
        data::Batch b;
        while (loader.next(b)) {
            opt.zero_grad();
            Tensor loss = cross_entropy(model->forward(b.images), b.labels);
            loss.backward();
            opt.step();
            sched.step();
            losses.push_back(loss.item());
            std::printf("epoch %lld step %3zu loss %.4f lr %.2e\n", (long long)epoch, losses.size(), losses.back(),
                        sched.last_lr()[0]);
        }
    }

    // Weights, AdamW moments and the schedule position in one safetensors file.
    optim::OptimizerState st = opt.state_dict();
    sched.save(st.scalars);
    auto tensors = model->state_dict();
    tensors.insert(tensors.end(), st.tensors.begin(), st.tensors.end());
    io::save_safetensors(checkpoint, tensors, st.scalars);
    std::printf("checkpoint: %zu tensors in %s\n", io::load_safetensors(checkpoint).tensors.size(), checkpoint.c_str());

    double last = 0;  // the mean of the last five steps, against the first step's loss
    for (size_t i = losses.size() - 5; i < losses.size(); ++i) last += losses[i] / 5;
    std::printf("first loss %.4f, last five %.4f\n", losses.front(), last);
    return last < losses.front() ? 0 : 1;
}
