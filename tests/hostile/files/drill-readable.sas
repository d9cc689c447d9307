sv=2021-12-02&sig=abc
