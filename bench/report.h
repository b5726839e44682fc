// Lines a benchmark wants printed in the summary after all runs (e.g. the
// sync scenarios' byte counts), next to the ratio lines.
#ifndef TIDEMAP_BENCH_REPORT_H_
#define TIDEMAP_BENCH_REPORT_H_

#include <string>
#include <vector>

namespace tidemap {

void AddReportLine(std::string line);
const std::vector<std::string>& ReportLines();

}  // namespace tidemap

#endif  // TIDEMAP_BENCH_REPORT_H_
