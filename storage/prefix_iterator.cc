#include <tidemap/storage/prefix_iterator.h>

namespace tidemap {

PrefixIterator::PrefixIterator(const Store& store, std::string_view prefix)
    : owned_(store.NewIterator()), it_(owned_.get()), prefix_(prefix) {}

PrefixIterator::PrefixIterator(StoreIterator* it, std::string_view prefix)
    : it_(it), prefix_(prefix) {}

PrefixIterator::~PrefixIterator() = default;

void PrefixIterator::SeekToFirst() { it_->Seek(prefix_); }

void PrefixIterator::Seek(std::string_view start) {
  it_->Seek(std::string_view(prefix_) < start ? start : std::string_view(prefix_));
}

void PrefixIterator::SeekAfter(std::string_view start) {
  Seek(start);
  if (Valid() && it_->key() == start) it_->Next();
}

bool PrefixIterator::Valid() const {
  return it_->Valid() && it_->key().substr(0, prefix_.size()) == prefix_;
}

void PrefixIterator::Next() { it_->Next(); }

}  // namespace tidemap
