// Overloaded: a visitor built from lambdas, for std::visit over a variant.
#ifndef TIDEMAP_BASE_OVERLOADED_H_
#define TIDEMAP_BASE_OVERLOADED_H_

namespace tidemap {

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

}  // namespace tidemap

#endif  // TIDEMAP_BASE_OVERLOADED_H_
