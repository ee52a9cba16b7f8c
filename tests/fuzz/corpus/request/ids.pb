
۠	*fff?@Z`hp2batch