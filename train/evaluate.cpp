#include "train/evaluate.h"

#include <algorithm>
#include <cmath>

#include "core/autograd.h"
#include "data/loader.h"
#include "dist/dist.h"
#include "ops/reduce.h"
#include "ops/softmax.h"

namespace cnx::train {

EvalResult evaluate(nn::Module& model, std::shared_ptr<const data::Dataset> dataset, const EvalOptions& o) {
    const bool sharded = o.sharded && dist::distributed();
    // Every rank must all-reduce a confusion matrix of the same size, also one whose share was empty.
    CNX_CHECK(!sharded || o.num_classes > 0, "evaluate: sharded evaluation needs num_classes");
    const bool root = dist::is_root();
    const LossFn loss_fn = o.loss ? o.loss : cross_entropy_loss();
    bool was_training = model.is_training();
    model.eval();
    NoGradGuard no_grad;
    data::LoaderOptions lo;
    lo.batch_size = o.batch_size;
    lo.shuffle = false;
    lo.drop_last = false;
    lo.num_workers = o.workers;
    lo.skip_bad_images = o.skip_bad_images;
    lo.log = o.warnings;
    if (sharded) lo.num_replicas = dist::world_size(), lo.rank = dist::rank(), lo.pad_shards = false;
    data::DataLoader loader(dataset, lo);
    EvalResult r;
    int64_t num_classes = o.num_classes;
    if (num_classes > 0) r.confusion.assign(num_classes, std::vector<int64_t>(num_classes, 0));
    double loss_sum = 0;
    int64_t correct1 = 0, correct5 = 0;
    if (root && o.on_begin) o.on_begin(loader.batches_per_epoch());
    loader.start_epoch(0);
    data::Batch batch;
    int64_t done = 0;
    while (loader.next(batch)) {
        if (batch.size() == 0) continue;
        Tensor logits = model.forward(batch.images);
        if (num_classes == 0) {
            CNX_CHECK(logits.dim() == 2, "evaluate: the model's output ", shape_str(logits.shape()),
                      " is not [batch, classes]");
            num_classes = logits.size(1);
            r.confusion.assign(num_classes, std::vector<int64_t>(num_classes, 0));
        }
        CNX_CHECK(logits.size(1) == num_classes, "evaluate: model gives ", logits.size(1), " classes, data has ",
                  num_classes);
        loss_sum += loss_fn(logits, Targets{batch.labels, Tensor()}).item() * batch.size();
        const float* p = logits.data<float>();
        for (int64_t i = 0; i < batch.size(); ++i) {
            const float* row = p + i * num_classes;
            int64_t label = batch.labels[i];
            const int64_t best = argmax(row, num_classes);
            int64_t rank = 0;
            for (int64_t c = 0; c < num_classes; ++c) {
                if (c != label && (row[c] > row[label] || (row[c] == row[label] && c < label))) ++rank;
            }
            correct1 += best == label;
            correct5 += rank < 5;
            r.confusion[label][best]++;
        }
        r.count += batch.size();
        ++done;
        if (root && o.on_batch_end) o.on_batch_end(done);
    }
    if (root && o.on_end) o.on_end();
    if (sharded) {
        std::vector<int64_t> counts{correct1, correct5, r.count};
        for (auto& row : r.confusion) counts.insert(counts.end(), row.begin(), row.end());
        dist::allreduce_sum(counts.data(), (int64_t)counts.size());
        dist::allreduce_sum(&loss_sum, 1);
        correct1 = counts[0], correct5 = counts[1], r.count = counts[2];
        for (int64_t c = 0; c < num_classes; ++c)
            std::copy_n(counts.begin() + 3 + c * num_classes, num_classes, r.confusion[c].begin());
    }
    CNX_CHECK(r.count > 0, "evaluate: no sample could be read");
    r.loss = loss_sum / r.count;
    r.top1 = (double)correct1 / r.count;
    r.top5 = (double)correct5 / r.count;
    for (int64_t c = 0; c < num_classes; ++c) {
        int64_t n = 0;
        for (auto v : r.confusion[c]) n += v;
        r.per_class_acc.push_back(n ? (double)r.confusion[c][c] / n : std::nan(""));
    }
    model.train(was_training);
    return r;
}

std::vector<Prediction> predict_samples(nn::Module& model, const data::Dataset& dataset, int64_t n) {
    bool was_training = model.is_training();
    NoGradGuard no_grad;
    model.eval();
    std::vector<Prediction> out;
    n = std::min<int64_t>(n, dataset.size());
    Generator g(0);
    for (int64_t i = 0; i < n; ++i) {
        data::Sample s;
        try {
            s = dataset.get(i, g);
        } catch (const data::BadImageError&) {
            continue;
        }
        Tensor logits = model.forward(s.image.reshape({1, s.image.size(0), s.image.size(1), s.image.size(2)}));
        Tensor prob = softmax(logits, -1);
        const float* p = prob.data<float>();
        const int64_t classes = prob.size(-1);
        const int64_t best = argmax(p, classes);
        out.push_back({i, s.label, best, p[best]});
    }
    model.train(was_training);
    return out;
}

}  // namespace cnx::train
